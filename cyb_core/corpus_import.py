"""`cyb data import` of the user's own .txt / .jsonl files: read and check every file, cut the
documents into pieces, deal them to the splits and write the corpus layout of cyb_core.corpus,
with IMPORT.json in place of PROVENANCE.json. The streamed import of Hugging Face datasets
(cyb_core.hf_datasets) writes the same manifest (`import_manifest`).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

from .atomic import atomic_save_dir, exclusive, recover_dir
from .corpus import (
    CHUNK_MAX,
    CHUNK_MIN,
    IMPORT_MANIFEST,
    SPLITS,
    CorpusError,
    check_target,
    chunk,
    write_splits,
)
from .errors import decode_user_text
from .folders import printable

# ----------------------------------------------------------------------------- reading the files
# `cyb data import`: a .txt file is one document; a .jsonl file holds one document per line,
# an object with a "text" string (other fields are ignored). "-" is standard input.
USER_SUFFIXES = (".txt", ".jsonl")
USER_FORMATS = ("txt", "jsonl")


def user_files(sources: list[str], exclude: Path | None = None) -> list[tuple[str, Path | None]]:
    """(label, path) of every file the sources name, sorted by label; "-" gives ("stdin", None).

    A folder contributes every .txt and .jsonl file below it (hidden files and folders are
    skipped); any other file there is an error, so nothing the user meant to import is dropped
    silently. The label (the folder's name / the path inside it, or a file's name) becomes the
    document id, so it must be unique. `exclude` (the output folder) may not lie inside a source.
    """
    found: dict[str, Path | None] = {}

    def add(label: str, path: Path | None) -> None:
        if label in found:
            raise CorpusError(
                f"two inputs are both named {label}: rename one or import their folder instead"
            )
        found[label] = path

    for src in sources:
        if src == "-":
            add("stdin", None)
            continue
        path = Path(src)
        if path.is_dir():
            root = path.resolve()
            if exclude is not None and exclude.resolve().is_relative_to(root):
                raise CorpusError(
                    f"--out {exclude} lies inside the input folder {src}: choose an --out outside it"
                )
            from .folders import files_below  # symlinked folders followed, loops refused

            files = files_below(path, CorpusError)
            for f in files:
                if f.suffix not in USER_SUFFIXES:
                    raise CorpusError(
                        f"{f} has an unknown extension: name it .txt (one document) or .jsonl "
                        f'(one {{"text": ...}} object per line), or move it out of {src}'
                    )
            if not files:
                raise CorpusError(f"{src} holds no .txt or .jsonl files: add some or name files")
            for f in files:
                add(f"{root.name}/{f.relative_to(path).as_posix()}", f)
        elif path.is_file():
            if path.suffix not in USER_SUFFIXES:
                raise CorpusError(
                    f"{src} has an unknown extension: name it .txt (one document) or .jsonl "
                    f'(one {{"text": ...}} object per line)'
                )
            add(path.name, path)
        else:
            raise CorpusError(f"{src}: no such file or folder; check the path")
    return sorted(found.items())


def parse_user_docs(label: str, text: str, fmt: str) -> list[dict]:
    """The documents of one decoded file: the whole text (txt) or one per non-blank line (jsonl)."""
    if fmt == "txt":
        return [{"doc_id": label, "source": "import", "title": label, "text": text.strip()}]
    docs = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(
                f"{label} line {n} is not valid JSON ({e.msg}): fix the line or remove it"
            ) from None
        if not isinstance(row, dict) or "text" not in row:
            raise CorpusError(
                f'{label} line {n} has no "text" field: each line must be an object like '
                '{"text": "..."}'
            )
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise CorpusError(
                f'{label} line {n}: "text" must be a non-empty string: fix the line or remove it'
            )
        docs.append(
            {"doc_id": f"{label}:{n}", "source": "import", "title": label, "text": row["text"]}
        )
    return docs  # not empty: the file had a non-blank line, and each one is a document


def read_user_docs(
    sources: list[str], stdin_format: str = "txt", exclude: Path | None = None, stdin=None
) -> tuple[list[dict], list[dict]]:
    """Read and check every file first: (documents, one provenance row per file).

    Nothing is written here; the first problem found raises CorpusError naming the file (and
    line) and the fix. `stdin` is a binary stream for "-" (default sys.stdin.buffer).
    """
    docs, info = [], []
    for label, path in user_files(sources, exclude):
        if path is None:
            raw, fmt = (stdin or sys.stdin.buffer).read(), stdin_format
        else:
            raw, fmt = path.read_bytes(), path.suffix[1:]
        file_docs = parse_user_docs(label, decode_user_text(label, raw, error=CorpusError), fmt)
        docs += file_docs
        info.append(
            {
                "file": label,
                "format": fmt,
                "bytes": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "docs": len(file_docs),
            }
        )
    return docs, info


# ----------------------------------------------------------------------------- splitting and writing

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


def import_manifest(
    sources: list[str],
    out: Path,
    rule: str,
    seed: int,
    heldout: float,
    pretrain: float,
    flags: str = "",
    **extra,
) -> dict:
    """IMPORT.json of an import, before its sources and files are known: the command that
    rebuilds it (`flags`: options of that importer), the rule, the seed and fractions, `extra`."""
    return {
        "rebuild": "cyb data import " + " ".join(sources) + f" --out {out}{flags} "
        f"--heldout {heldout} --pretrain {pretrain} --seed {seed}",
        "rule": rule,
        "seed": seed,
        "heldout": heldout,
        "pretrain": pretrain,
        **extra,
        "sources": [],
        "files": {},
    }


def write_import_manifest(folder: Path, manifest: dict, files: dict[str, dict]) -> None:
    """Record the written splits' stats (`files`) in `manifest` and write it as folder/IMPORT.json."""
    manifest["files"] = files
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (folder / IMPORT_MANIFEST).write_text(text, encoding="utf-8")


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
    manifest = import_manifest(sources, out, IMPORT_RULE, seed, heldout, pretrain)
    manifest["sources"] = files

    def write(tmp: Path) -> None:
        write_import_manifest(tmp, manifest, write_splits(tmp, splits, None))

    with exclusive(out, flag="--out"):
        recover_dir(out)
        check_target(
            out, IMPORT_MANIFEST, IMPORT_FILES, "--out", "cyb data import"
        )  # again, as the sole writer
        atomic_save_dir(out, write)
    return manifest
