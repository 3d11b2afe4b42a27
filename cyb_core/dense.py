"""Dense (parallel) evaluation: one forward pass over the Recipe 1 expanded sequence.

For every real input token x_t (followed by W-1 pauses) with target x_{t+1}:
d_i, t_i, s_i (method.md section 2, the model's own stopping: omega one-hot last,
gamma 1), expected and greedy pause counts, -log p(y) and whether the answer at
the greedy stop is right. Documents are scored independently: each is cut into
windows of `seq_len` input tokens (a fresh context per window), and every token of
the document, plus a final end-of-text, is a target exactly once. A book-length document is
tokenized in pieces (`doc_tokens`, the same tokens) and its windows are cut lazily a batch at a
time, so beyond its compact token arrays and results no memory grows with its length.

`doc_windows`, the way documents are cut into contexts, lives here too; the result is an
EvalResult (cyb_core.eval_result), which cyb_core.adaptive (Recipe 2) fills as well.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import weakref
from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from . import losses, pauses, variants
from .eval_result import EvalResult
from .precision import autocast
from .tokenizer import bos_ids

TOKENIZE_CHARS = 100_000  # a longer document is tokenized in pieces of about this many characters
# cut-safety probe: words, contractions, numbers, punctuation, runs of spaces, newlines, non-ASCII
_PROBE = "It's 12 o'clock, Mr. Smith; say \"hi\" 3.14 times!\n\nNew  para\tgraph: \u00fcber \u65e5\u672c x"
_CUT_SAFE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_GAP = re.compile(r"(?<=\S) (?=\S)")  # a single space between two non-space characters


def _cuts(text: str, size: int) -> list[int]:
    """Piece boundaries 0 < c_1 < ... < len(text): each one sits right before a space that has a
    non-space character on both sides ("word| next"), at most about `size` characters apart."""
    cuts, pos = [0], 0
    while len(text) - pos > size:
        end = pos + size
        cut = text.rfind(" ", pos + size // 2, end)
        while cut > pos and (text[cut - 1].isspace() or text[cut + 1 : cut + 2].isspace()):
            cut = text.rfind(" ", pos + size // 2, cut)
        if cut <= pos:  # no good space in the second half: take the next one, if any
            m = _GAP.search(text, end)
            if m is None:
                break
            cut = m.start()
        cuts.append(cut)
        pos = cut
    return [*cuts, len(text)]


def _encode_pieces(tokenizer, text: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids (n,) and character offsets (n, 2) of `text` (no special tokens), tokenized piece by
    piece; each piece's tokens become compact arrays at once."""
    ids, offs = [], []
    for a, b in itertools.pairwise(_cuts(text, size)):
        enc = tokenizer(text[a:b], add_special_tokens=False, return_offsets_mapping=True)
        ids.append(np.array(enc["input_ids"], dtype=np.int64))
        offs.append(np.array(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2) + a)
    return np.concatenate(ids), np.concatenate(offs)


def _cut_safe(tokenizer) -> bool:
    """Whether cutting before a space between two words leaves the tokens as they are: true for
    byte-level BPE with GPT-2-style pre-tokenisation (ours, GPT-2, Qwen, Llama 3), where such a
    space always starts a new pre-token; checked once per tokenizer on a probe cut everywhere."""
    try:
        return _CUT_SAFE[tokenizer]
    except (KeyError, TypeError):
        pass
    whole = tokenizer(_PROBE, add_special_tokens=False, return_offsets_mapping=True)
    want_ids, want_offs = whole["input_ids"], [list(o) for o in whole["offset_mapping"]]
    safe = True
    for size in (2, 3, 5, 8, 13):
        ids, offs = _encode_pieces(tokenizer, _PROBE, size)
        safe &= ids.tolist() == want_ids and offs.tolist() == want_offs
    with contextlib.suppress(TypeError):  # an object without weak references: not cached
        _CUT_SAFE[tokenizer] = safe
    return safe


def doc_tokens(tokenizer, text: str, piece_chars: int | None = None) -> tuple[np.ndarray, ...]:
    """(ids (n,), offsets (n, 2)) of one document, with the tokenizer's BOS prefix at (0, 0) and
    no end-of-text. A long document is tokenized in
    pieces (bounded memory) when the tokenizer is cut-safe (_cut_safe), so the ids are the same."""
    size = piece_chars or TOKENIZE_CHARS
    if len(text) > size and _cut_safe(tokenizer):
        ids, offs = _encode_pieces(tokenizer, text, size)
    else:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.array(enc["input_ids"], dtype=np.int64)
        offs = np.array(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    bos = bos_ids(tokenizer)
    return (
        np.concatenate([np.array(bos, dtype=np.int64), ids]),
        np.concatenate([np.zeros((len(bos), 2), dtype=np.int64), offs]),
    )


def token_windows(tokens, lengths: list[int], eos: int, seq_len: int):
    """doc_windows over documents already tokenized by doc_tokens (`lengths`: their characters),
    generated lazily: a window's lists exist only while its batch is built."""
    for j, ((ids, offs), n_chars) in enumerate(zip(tokens, lengths, strict=True)):
        ids = np.append(ids, eos)
        offs = np.concatenate([offs, [[n_chars, n_chars]]])
        for start in range(0, len(ids) - 1, seq_len):
            w_ids = ids[start : start + seq_len + 1].tolist()
            yield j, start, w_ids, [tuple(o) for o in offs[start : start + seq_len].tolist()]


def doc_windows(docs: list[str], tokenizer, seq_len: int) -> tuple[int, Iterator]:
    """(N, windows): the number of input tokens (each is an input once) and a lazy iterator of
    (doc index, first token index, ids of up to seq_len + 1 tokens, char offsets). Documents are
    tokenized first, into compact arrays; a window's lists exist only while its batch is built."""
    tokens = [doc_tokens(tokenizer, d) for d in docs]
    n = sum(len(ids) for ids, _ in tokens)
    return n, token_windows(tokens, [len(d) for d in docs], tokenizer.eos_token_id, seq_len)


def _score_batch(model, chunk: list, readout: str, bf16: bool) -> dict:
    """Per-token quantities (B, T[, W]) of one batch of windows, on the model's device."""
    W, pad = model.settings.w, model.pad_id
    L = max(len(w[2]) for w in chunk)
    ids = torch.full((len(chunk), L), pad, dtype=torch.long)
    attn = torch.zeros((len(chunk), L), dtype=torch.long)
    for r, (_, _, w_ids, _) in enumerate(chunk):
        ids[r, : len(w_ids)] = torch.tensor(w_ids)
        attn[r, : len(w_ids)] = 1
    ids, attn = ids.to(model.device), attn.to(model.device)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    ex = pauses.expand_constant(inputs, W, model.pause_ids, attention_mask=attn[:, :-1])
    with autocast(model.device, bf16 and model.device.type == "cuda"):
        logits, _ = model(
            ex.input_ids,
            position_ids=ex.position_ids,
            attention_mask=ex.attention_mask,
            prior=False,
        )
    # (B, T, W, V) without the DK prior, bf16 under autocast: no full-size fp32 copy; the
    # loss upcasts a chunk at a time and adds the prior in fp32. The argmax below is the
    # same with or without it (it shifts every column but DK, and DK is excluded).
    logits = ex.to_steps(logits)
    q = losses.step_quantities(logits, targets, model.dk_id, psi=model.settings.psi)
    policy = losses.readout(q, readout)  # tbys answers at the last step, control at step 0
    log_s, nll = policy.log_s, -losses.log_p(policy)
    # the step the model answers at: first d < 0.5 under its own stopping, else the fixed step
    greedy = losses.greedy_pauses(q.log_d) if readout == "own" else log_s.argmax(-1)
    B, T, _, V = logits.shape
    # the answer step's logits (B * T, V), a copy: index_select copies whole rows, where a
    # gather with an index expanded over V computes an address per element
    stop_rows = torch.arange(B * T, device=greedy.device) * W + greedy.reshape(-1)
    at_stop = logits.reshape(B * T * W, V).index_select(0, stop_rows)
    at_stop[:, model.dk_id] = -math.inf
    # max(-1).indices: argmax's first maximum, ~4x faster over a (B * T, V) CPU tensor
    correct = at_stop.max(-1).indices.view(B, T) == targets
    return {
        "d": q.log_d[..., :-1].exp(),
        "t": q.log_t.exp(),
        "s": log_s.exp(),
        "expected_pauses": losses.expected_pauses(log_s),
        "greedy_pauses": greedy,
        "nll": nll,
        "correct": correct,
        "token_id": inputs,
        "next_id": targets,
    }


@torch.no_grad()
def dense_eval(
    model,
    docs: list[str],
    seq_len: int = 128,
    batch_size: int = 16,
    progress: bool = True,
    bf16: bool = False,
) -> EvalResult:
    """Score `docs` with `model` (a CYBModel) under Recipe 1 with its own W and variant."""
    if not docs or not any(d.strip() for d in docs):
        raise ValueError("nothing to evaluate: the text is empty")
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be at least 1, got {seq_len}, {batch_size}")
    model.eval()
    model.check_window(seq_len)
    readout = variants.get(model.settings.variant).readout
    # streamed: windows are cut from compact token arrays one batch at a time, so the memory
    # of a long text is its tokens and its results, never its windows or their logits
    N, windows = doc_windows(docs, model.tokenizer, seq_len)
    # results go straight into arrays of N rows, made at the first batch (dtype and shape of
    # its columns): thousands of small per-window arrays would fragment the heap of a long run
    out: dict[str, np.ndarray] = {}
    at = 0
    bar = tqdm(total=N, disable=not progress, unit="tok", desc="dense eval")
    while chunk := list(itertools.islice(windows, batch_size)):
        row = _score_batch(model, chunk, readout, bf16)
        row = {k: v.cpu().numpy() for k, v in row.items()}  # one CPU-GPU sync per batch
        if not out:
            out = {k: np.empty((N, *v.shape[2:]), dtype=v.dtype) for k, v in row.items()}
            out |= {k: np.empty(N, dtype=np.int64) for k in ("doc", "idx")}
            out |= {k: np.empty(N, dtype=np.int64) for k in ("char_start", "char_end")}
        for r, (j, start, w_ids, offs) in enumerate(chunk):
            n = len(w_ids) - 1
            rows = slice(at, at + n)
            for k, v in row.items():
                out[k][rows] = v[r, :n]
            out["doc"][rows] = j
            out["idx"][rows] = np.arange(start, start + n)
            out["char_start"][rows], out["char_end"][rows] = np.asarray(offs[:n]).reshape(n, 2).T
            at += n
            bar.update(n)
    bar.close()
    assert at == N, f"scored {at} tokens of {N}"
    return EvalResult(**out)
