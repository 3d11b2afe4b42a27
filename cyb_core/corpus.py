"""A corpus folder: its layout, writing its gzipped JSONL splits, and reading them back.

A corpus is split into pretrain / finetune / heldout (gzipped JSONL, one document per line),
with a manifest: PROVENANCE.json for the shipped corpus (built from public archives by
cyb_core.corpus_build), IMPORT.json for the user's own text (cyb_core.corpus_import), mix.json
for a mixed corpus (cyb_core.synthetic). Every command reads it via --data-root: `load_split`.

A corpus folder switches whole: its splits and manifest are written into a staging folder that
`atomic.atomic_save_dir` swaps in, under the folder's lock (`atomic.exclusive`: one writer),
so a kill at any point leaves the old corpus or the new one. A writer replaces only a folder
holding nothing but what it writes itself (`check_target`). Readers check each split against
the manifest's size and SHA-256 (hashing bytes they read anyway) and refuse a corpus whose
files do not match it, e.g. a split copied in from another build.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from pathlib import Path

from .atomic import atomic_write, valid_dir
from .errors import UserError

CHUNK_MIN, CHUNK_MAX = 2000, 4000
SPLITS = ("pretrain", "finetune", "heldout")
POS_FILE = "heldout_brown_pos"
PROVENANCE = "PROVENANCE.json"
IMPORT_MANIFEST = "IMPORT.json"
MANIFESTS = (PROVENANCE, "IMPORT.json", "mix.json")


# defined here, the bottom of the corpus modules, so that every one of them can raise it
class CorpusError(UserError, RuntimeError):
    """A build problem with a one-line message naming the cause and the fix."""


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
