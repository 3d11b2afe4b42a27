"""An evaluation's per-token result as the store's tables: tokens (with the spaCy word each
token starts or falls in, aligned by character offsets, and the class of the token it predicts),
docs and words."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cyb_core import synthetic

from . import pos


def _vectors(a: np.ndarray) -> pa.ListArray:
    """(N, K) floats -> list<double> with NaN (steps not taken) as NULL."""
    n, k = a.shape
    flat = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
    return pa.ListArray.from_arrays(
        pa.array(np.arange(n + 1, dtype=np.int32) * k),
        pa.array(flat, mask=np.isnan(flat), type=pa.float64()),
    )


def decode_table(tokenizer, ids: np.ndarray) -> dict[int, str]:
    """id -> its text, each id decoded on its own (byte-level: may hold a partial character)."""
    uniq = np.unique(ids).tolist()
    texts = tokenizer.batch_decode(
        [[i] for i in uniq], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    return dict(zip(uniq, texts, strict=True))


def build_tables(
    result, docs: list[dict], words: list[pos.Words], tokenizer
) -> dict[str, pa.Table]:
    """EvalResult + documents + their spaCy words -> the tokens, docs and words tables (no eval_id)."""
    texts = [d["text"] for d in docs]
    ann, classes = _annotations(result, texts, words)
    vocab = decode_table(tokenizer, np.concatenate([result.token_id, result.next_id]))
    doc_ids = np.array([d["doc_id"] for d in docs], dtype=object)
    pauses = result.pauses
    tokens = pa.table(
        {
            "doc_id": pa.array(doc_ids[result.doc], type=pa.string()),
            "idx": pa.array(result.idx, type=pa.int32()),
            "token_id": pa.array(result.token_id, type=pa.int32()),
            "token": pa.array([vocab[i] for i in result.token_id.tolist()], type=pa.string()),
            "next_id": pa.array(result.next_id, type=pa.int32()),
            "next_token": pa.array([vocab[i] for i in result.next_id.tolist()], type=pa.string()),
            "char_start": pa.array(result.char_start, type=pa.int32()),
            "char_end": pa.array(result.char_end, type=pa.int32()),
            **{k: pa.array(ann[k], type=pa.string()) for k in ("word", "upos", "tag", "morph")},
            "word_start": pa.array(ann["word_start"], type=pa.bool_()),
            "dk": _vectors(result.d),
            "t": _vectors(result.t),
            "s": _vectors(result.s),
            "expected_pauses": pa.array(result.expected_pauses, type=pa.float64()),
            "greedy_pauses": pa.array(result.greedy_pauses, type=pa.int32()),
            "pauses": pa.array(
                pauses if pauses is not None else np.full(len(result.nll), None), type=pa.int32()
            ),
            "nll": pa.array(result.nll, type=pa.float64()),
            "correct": pa.array(result.correct, type=pa.bool_()),
            "token_class": pa.array(np.array(synthetic.CLASSES)[classes], type=pa.string()),
        }
    )
    docs_t = pa.table({"doc_id": pa.array(doc_ids.tolist(), type=pa.string()), "text": texts})
    return {"tokens": tokens, "docs": docs_t, "words": _words_table(docs, words)}


def _annotations(result, texts: list[str], words: list[pos.Words]):
    """Per token row: the spaCy word annotations (word, upos, tag, morph, word_start; object
    arrays) of the word it falls in, and the class of the token it predicts (int8 codes)."""
    ann = {
        k: np.empty(len(result.nll), dtype=object)
        for k in ("word", "upos", "tag", "morph", "word_start")
    }
    for j, text in enumerate(texts):
        sel = np.flatnonzero(result.doc == j)
        for k, v in pos.align(text, result.char_start[sel], result.char_end[sel], words[j]).items():
            ann[k][sel] = v
    classes = np.zeros(len(result.nll), dtype=np.int8)  # of the next (predicted) token
    for j, text in enumerate(texts):
        sel = np.flatnonzero(result.doc == j)  # rows of a document are in token order
        classes[sel] = synthetic.predicted_classes(
            text, result.char_start[sel], result.char_end[sel]
        )
    return ann, classes


def _words_table(docs: list[dict], words: list[pos.Words]) -> pa.Table:
    """The spaCy words of every document, one row each."""
    parts = []
    for d, w in zip(docs, words, strict=True):
        n = len(w.start)
        parts.append(
            pa.table(
                {
                    "doc_id": pa.array([d["doc_id"]] * n, type=pa.string()),
                    "widx": pa.array(np.arange(n), type=pa.int32()),
                    "char_start": pa.array(w.start, type=pa.int32()),
                    "char_end": pa.array(w.end, type=pa.int32()),
                    "word": pa.array(w.word, type=pa.string()),
                    "upos": pa.array(w.upos, type=pa.string()),
                    "tag": pa.array(w.tag, type=pa.string()),
                    "morph": pa.array(w.morph, type=pa.string()),
                    "sent_start": pa.array(w.sent_start, type=pa.bool_()),
                    "space_after": pa.array(w.space_after, type=pa.bool_()),
                }
            )
        )
    return pa.concat_tables(parts)
