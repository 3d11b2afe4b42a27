"""A compute-hungry slice of the corpus: plain-English lines whose answers follow from the text.

Each line states a small problem and its answer, e.g.

    Ann added 47 + 385 = 432.            (sum: two operands of 1 to 3 digits)
    The total of 8 + 31 + 6 = 45.        (sum3: three operands of 1 to 2 digits)
    How many x in x o x x o? 3.          (count: one symbol in a list of 3 to 9)

Predicting an answer token takes computation over the line (carries, a running count), while
most other tokens of the line are easy or fixed by the template. Numbers are tokenised by the
ordinary tokenizer, so an answer is one or more tokens such as " 4" "32".

Generation is seeded and deterministic: `documents(split, n_chars, seed)` gives the same bytes
for the same arguments. `classify` tags every character of any text - the generator's or
someone else's - as natural text, a synthetic line, or an answer, by pattern, so evaluations of
typed-in sums are sliced the same way.

A mixed corpus is a folder holding the synthetic `<split>.jsonl.gz` files and a `mix.json`
naming the natural corpus and the share; `corpus.load_split` interleaves the two.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np

KINDS = ("sum", "sum3", "count")
WEIGHTS = (0.6, 0.2, 0.2)  # share of lines of each kind
CLASSES = ("natural", "synthetic", "answer")  # token classes, in the order of their codes
SOURCE = "synthetic"
DOC_CHARS = (2000, 4000)  # like the natural chunks
SPLIT_SEEDS = {"pretrain": 1, "finetune": 2, "heldout": 3}
DEFAULT_SHARE = (
    0.5  # of characters in each split of the mixed corpus: half, so small budgets learn sums
)

_NAMES = ("Ann", "Ben", "Cora", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon")
_THINGS = ("apples", "coins", "stamps", "books", "shells", "marbles", "cards", "pens")
_SUM = (
    "{a} + {b} = {c}.",
    "{name} added {a} + {b} = {c}.",
    "We know that {a} + {b} = {c}.",
    "{name} had {a} {thing} and found {b} more: {a} + {b} = {c} {thing}.",
    "Check the sum: {a} + {b} = {c}.",
)
_SUM3 = ("{a} + {b} + {d} = {c}.", "The total of {a} + {b} + {d} = {c}.")
_SYMBOLS = ("x o", "a b", "cat dog", "red blue")
_COUNT = ("How many {s} in {items}? {c}.", "Count {s} in {items}: {c}.")

# What makes a line synthetic and where its answer is. Group "c" is the answer.
PATTERNS = (
    re.compile(r"(?<![\d.])\d{1,3}(?: \+ \d{1,3}){1,2} = (?P<c>\d+)"),
    re.compile(r"(?:How many|Count) (?P<s>\w+) in (?P<items>\w+(?: \w+)*)[?:] (?P<c>\d+)"),
)


def _operand(rng: random.Random, max_digits: int) -> int:
    digits = rng.randint(1, max_digits)  # uniform over the number of digits, not the value
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def line(rng: random.Random, kind: str) -> str:
    """One synthetic line of `kind` (see KINDS)."""
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    if kind == "sum":
        a, b = _operand(rng, 3), _operand(rng, 3)
        return rng.choice(_SUM).format(a=a, b=b, c=a + b, name=name, thing=thing)
    if kind == "sum3":
        a, b, d = (_operand(rng, 2) for _ in range(3))
        return rng.choice(_SUM3).format(a=a, b=b, d=d, c=a + b + d)
    if kind == "count":
        pair = rng.choice(_SYMBOLS).split()
        items = [rng.choice(pair) for _ in range(rng.randint(3, 9))]
        s = rng.choice(pair)
        return rng.choice(_COUNT).format(s=s, items=" ".join(items), c=items.count(s))
    raise ValueError(f"unknown synthetic kind {kind!r}; choose from {', '.join(KINDS)}")


def document(rng: random.Random, n_chars: int) -> str:
    """Lines joined by newlines until the text reaches n_chars."""
    lines, size = [], 0
    while size < n_chars:
        lines.append(line(rng, rng.choices(KINDS, WEIGHTS)[0]))
        size += len(lines[-1]) + 1
    return "\n".join(lines)


def documents(split: str, n_chars: int, seed: int = 0) -> list[dict]:
    """Synthetic documents of about n_chars in all, in the corpus row format."""
    if n_chars < 0:
        raise ValueError(f"n_chars must be >= 0, got {n_chars}")
    rng = random.Random(f"{seed}/{SPLIT_SEEDS.get(split, 0)}/{split}")
    docs, size = [], 0
    while size < n_chars:
        text = document(rng, rng.randint(*DOC_CHARS))
        docs.append(
            {
                "doc_id": f"{SOURCE}/{split}-{len(docs):05d}",
                "source": SOURCE,
                "title": f"Synthetic {split} {len(docs)}",
                "text": text,
            }
        )
        size += len(text)
    return docs


def classify(text: str) -> np.ndarray:
    """(len(text),) int8 class code per character: 0 natural, 1 synthetic line, 2 answer."""
    n = len(text)
    # line bounds by lookup, not by scanning from each match: a book on one line has thousands
    # of matches, and marking or searching the whole line per match is quadratic
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (n,) code points
    newlines = np.flatnonzero(chars == ord("\n"))
    depth = np.zeros(n + 1, dtype=np.int32)  # +1 where a marked line starts, -1 after it ends
    answers = []
    for pattern in PATTERNS:
        for m in pattern.finditer(text):
            i = np.searchsorted(newlines, m.start())  # first newline at or after the match
            start = newlines[i - 1] + 1 if i > 0 else 0
            j = np.searchsorted(newlines, m.end())
            end = newlines[j] + 1 if j < len(newlines) else n  # the line's newline belongs to it
            depth[start] += 1
            depth[end] -= 1
            answers.append((m.start("c"), m.end("c")))
    codes = (np.cumsum(depth[:n]) > 0).astype(np.int8)
    for a, b in answers:
        codes[a:b] = 2
    return codes


def token_classes(text: str, char_start: np.ndarray, char_end: np.ndarray) -> np.ndarray:
    """(N,) class code of tokens with the given character spans: the highest class they touch.

    A token such as " 43" (space included) counts as an answer if any of its characters is one;
    an empty span (end-of-text) is natural.
    """
    codes = classify(text)
    # prefix maxima are not enough (a span may start after an answer); use a cumulative count
    # per class and test whether the span holds any character of that class
    out = np.zeros(len(char_start), dtype=np.int8)
    for k in (1, 2):
        csum = np.concatenate([[0], np.cumsum(codes >= k)])
        out[(csum[char_end] - csum[char_start]) > 0] = k
    return out


def predicted_classes(text: str, char_start: np.ndarray, char_end: np.ndarray) -> np.ndarray:
    """(N,) class code of the token each row *predicts*, for the rows of one document in token
    order (row r reads token r and predicts token r + 1; the last row predicts end-of-text)."""
    cls = token_classes(text, char_start, char_end)
    return np.append(cls[1:], np.int8(0)) if len(cls) else cls


# ----------------------------------------------------------------------------- mixed corpora


def mix_docs(natural: list[dict], synthetic: list[dict]) -> list[dict]:
    """Synthetic documents spread evenly between the natural ones (no RNG: stable order)."""
    if not synthetic:
        return list(natural)
    out, n, s = [], len(natural), len(synthetic)
    j = 0
    for i, doc in enumerate(natural):
        out.append(doc)
        while j < s and (j + 1) * n <= (i + 1) * s:
            out.append(synthetic[j])
            j += 1
    out.extend(synthetic[j:])
    return out


def write_mixed(
    out_dir: str | Path,
    natural_root: str | Path,
    share: float = DEFAULT_SHARE,
    seed: int = 0,
    splits=("pretrain", "finetune", "heldout"),
) -> dict:
    """Write the synthetic splits and mix.json to out_dir; returns the manifest.

    The folder switches whole (staged, then swapped in by atomic.atomic_save_dir under its
    lock), and only a new, empty or earlier mixed folder is replaced; out_dir may not be, hold
    or lie inside the natural corpus it mixes."""
    import hashlib

    from .atomic import atomic_save_dir, exclusive, recover_dir
    from .corpus import _gz_jsonl, load_split

    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    check_mix_target(out_dir, natural_root)
    # every natural split is read before anything is written: a bad --natural leaves no folder
    chars = {
        split: sum(len(d["text"]) for d in load_split(split, natural_root)) for split in splits
    }
    out_dir = Path(out_dir)
    rel = Path(natural_root).resolve()
    try:
        rel = rel.relative_to(out_dir.resolve().parent)
        natural_ref = str(Path("..") / rel)
    except ValueError:
        natural_ref = str(rel)
    manifest = {
        "natural": natural_ref,
        "share": share,
        "seed": seed,
        "kinds": list(KINDS),
        "weights": list(WEIGHTS),
        "files": {},
    }

    def write(tmp: Path) -> None:  # the splits and mix.json switch in one rename
        tmp.mkdir(parents=True)
        for split in splits:
            docs = documents(split, round(chars[split] * share / (1 - share)), seed)
            data = _gz_jsonl(docs, f"{split}.jsonl")
            (tmp / f"{split}.jsonl.gz").write_bytes(data)
            manifest["files"][split] = {
                "docs": len(docs),
                "chars": sum(len(d["text"]) for d in docs),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        (tmp / "mix.json").write_text(json.dumps(manifest, indent=2) + "\n")

    with exclusive(out_dir, flag="--mixed"):
        recover_dir(out_dir)
        check_mix_target(out_dir, natural_root)  # again, as the folder's sole writer
        atomic_save_dir(out_dir, write)
    return manifest


MIX_FILES = frozenset({"mix.json", *(f"{s}.jsonl.gz" for s in ("pretrain", "finetune", "heldout"))})


def check_mix_target(out_dir: str | Path, natural_root: str | Path) -> None:
    """CorpusError unless `out_dir` may be replaced by a mixed corpus of `natural_root`: not the
    natural corpus, not inside it nor holding it, and holding nothing but an earlier mix."""
    from .corpus import CorpusError, check_target

    mixed, natural = Path(out_dir).resolve(), Path(natural_root).resolve()
    if mixed.is_relative_to(natural) or natural.is_relative_to(mixed):
        where = (
            "is"
            if mixed == natural
            else ("lies inside" if mixed.is_relative_to(natural) else "holds")
        )
        raise CorpusError(
            f"--mixed {out_dir} {where} the natural corpus {natural_root}, which writing it would "
            "overwrite: choose a separate --mixed folder, e.g. data/mixed"
        )
    check_target(Path(out_dir), "mix.json", MIX_FILES, "--mixed", "cyb data mix")
