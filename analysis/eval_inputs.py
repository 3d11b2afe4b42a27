"""What a user gives `cyb eval` to read: a split of a corpus root or one text file, as documents;
and `EvalError`, the evaluation's error for input it cannot use (bad arguments, a missing
checkpoint, a damaged file).

dataset: the split name for the default corpus root (heldout), ROOTNAME/split for another
root (fixture/heldout), text/FILENAME for a text file; truncation with max_docs/max_chars
adds .dN / .cN so a partial evaluation never replaces a full one.
"""

from __future__ import annotations

import re
from pathlib import Path

from cyb_core.errors import UserError, read_user_text

DEFAULT_ROOT = Path("data/corpus")


class EvalError(UserError, ValueError):
    """An evaluation's input the user can fix: its arguments, checkpoint, run or text."""


def read_text_file(path: str | Path) -> str:
    """A user's text file (or "-", standard input) as one document."""
    return read_user_text(path, error=EvalError)


def load_docs(
    split: str | None = None,
    text: str | Path | None = None,
    root: str | Path = DEFAULT_ROOT,
    max_docs: int | None = None,
    max_chars: int | None = None,
) -> tuple[str, list[dict]]:
    """(dataset name, [{doc_id, text}]) for a split of `root` or one text file."""
    if (split is None) == (text is None):
        raise EvalError("give exactly one of a split (--split) or a text file (--text)")
    for flag, value in (("--max-docs", max_docs), ("--max-chars", max_chars)):
        if value is not None and value < 1:
            raise EvalError(f"{flag} must be at least 1, got {value} (leave it out for all)")
    if text is not None:
        name = "stdin" if str(text) == "-" else re.sub(r"[\s:]+", "_", Path(text).name)
        docs, dataset = [{"doc_id": name, "text": read_text_file(text)}], f"text/{name}"
    else:
        from cyb_core.corpus import load_split

        if split == "heldout_brown_pos":
            raise EvalError(
                "heldout_brown_pos holds gold tags, not text; evaluate the heldout split"
            )
        docs = [{"doc_id": d["doc_id"], "text": d["text"]} for d in load_split(split, Path(root))]
        same = Path(root).resolve() == DEFAULT_ROOT.resolve()
        dataset = split if same else f"{Path(root).resolve().name}/{split}"
    if max_docs is not None:
        docs, dataset = docs[:max_docs], f"{dataset}.d{max_docs}"
    if max_chars is not None:
        docs, dataset = (
            [{**d, "text": d["text"][:max_chars]} for d in docs],
            f"{dataset}.c{max_chars}",
        )
    docs = [d for d in docs if d["text"].strip()]
    if not docs:
        raise EvalError(f"{dataset}: no text to evaluate")
    return dataset, docs
