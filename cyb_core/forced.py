"""Forced evaluation: teacher-forced with a given number of pauses after each real token.

The placement control of the frontier experiment (docs/results.md section 11):
  uniform K   K pauses after every token, each token read out at step K;
  shuffled    a Recipe-2 model's own pause counts from its adaptive evaluation of the same text,
              permuted across the real tokens of each document (the same multiset of counts,
              so exactly the same number of positions), each token read out at the step its
              count ends on.
Both are one parallel forward pass per batch in the Recipe 2 layout
(pauses.expand_with_counts) instead of adaptive's step-by-step loop. Given the same counts,
a token sees the same context either way, so forcing a model's own adaptive counts reproduces
its adaptive evaluation (tests/test_forced.py checks it), and uniform W-1 reproduces the dense
evaluation read at the last step.

The result fills eval_result.EvalResult as adaptive evaluation does: d and t NaN at steps not in
context, s one-hot at the read-out step, expected = greedy = `pauses` = the forced count.

    res = forced_eval(model, docs, uniform_counts(model, docs, 2))
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from . import pauses, vocab
from .dense import doc_tokens, token_windows
from .eval_result import EvalResult
from .precision import autocast


def token_counts(tokenizer, docs: list[str]) -> list[int]:
    """Input tokens per document as every evaluation windows it (BOS included, one row each)."""
    return [len(doc_tokens(tokenizer, d)[0]) for d in docs]


def uniform_counts(model, docs: list[str], k: int) -> list[np.ndarray]:
    """K pauses after every input token of every document."""
    return [np.full(n, k, dtype=np.int64) for n in token_counts(model.tokenizer, docs)]


def shuffle_counts(counts: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Each document's counts permuted across its own tokens (the multiset is kept), seeded."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(c) for c in counts]


def check_counts(model, docs: list[str], counts: list[np.ndarray]) -> None:
    """Refuse counts that do not give every input token of every document 0..W-1 pauses."""
    W = model.settings.w
    if len(counts) != len(docs):
        raise ValueError(f"pause counts for {len(counts)} documents, but {len(docs)} to evaluate")
    for j, (c, n) in enumerate(zip(counts, token_counts(model.tokenizer, docs), strict=True)):
        c = np.asarray(c)
        if c.shape != (n,):
            raise ValueError(
                f"document {j} has {n} tokens but {c.size} pause counts: the counts come from "
                "another text or tokenizer"
            )
        if n and (c.min() < 0 or c.max() > W - 1):
            raise ValueError(
                f"pause counts must be in 0..{W - 1} (W = {W}), document {j} has {c.max()}"
            )


@torch.no_grad()
def forced_eval(
    model,
    docs: list[str],
    counts: list[np.ndarray],
    *,
    seq_len: int = 128,
    batch_size: int = 16,
    progress: bool = True,
    bf16: bool = False,
) -> EvalResult:
    """Score `docs` with counts[j][i] pauses after input token i of document j (windows as in
    dense_eval), each token read out at the step its count ends on; see the module docstring."""
    if not docs or not any(d.strip() for d in docs):
        raise ValueError("nothing to evaluate: the text is empty")
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be at least 1, got {seq_len}, {batch_size}")
    check_counts(model, docs, counts)  # before any forward pass
    model.eval()
    W, pad, dev = model.settings.w, model.pad_id, model.device
    tokens = [doc_tokens(model.tokenizer, d) for d in docs]
    N = sum(len(ids) for ids, _ in tokens)
    windows = token_windows(tokens, [len(d) for d in docs], model.tokenizer.eos_token_id, seq_len)
    out: dict[str, list] = {k: [] for k in ("d", "t", "nll", "correct", "token_id", "next_id")}
    meta: dict[str, list] = {k: [] for k in ("doc", "idx", "char_start", "char_end", "pauses")}
    bar = tqdm(total=N, disable=not progress, unit="tok", desc="forced eval")
    while chunk := list(itertools.islice(windows, batch_size)):
        row = _score_batch(model, *_batch(chunk, counts, pad, dev), bf16)
        for r, (j, start, w_ids, offs) in enumerate(chunk):
            n = len(w_ids) - 1
            for k, v in row.items():
                out[k].append(v[r, :n])
            meta["doc"].append(np.full(n, j))
            meta["idx"].append(np.arange(start, start + n))
            meta["char_start"].append(np.array([o[0] for o in offs[:n]], dtype=np.int64))
            meta["char_end"].append(np.array([o[1] for o in offs[:n]], dtype=np.int64))
            meta["pauses"].append(np.asarray(counts[j][start : start + n], dtype=np.int64))
            bar.update(n)
    bar.close()
    cols = {k: np.concatenate(v) for k, v in (out | meta).items()}
    p = cols["pauses"]
    return EvalResult(
        **cols,
        s=np.eye(W)[p],
        expected_pauses=p.astype(float),
        greedy_pauses=p,
    )


def _batch(chunk, counts, pad: int, dev):
    """A batch of windows, padded: token ids (B, L), attention (B, L), pause counts (B, L - 1)."""
    L = max(len(w[2]) for w in chunk)
    ids = torch.full((len(chunk), L), pad, dtype=torch.long)
    attn = torch.zeros((len(chunk), L), dtype=torch.long)
    cnt = torch.zeros((len(chunk), L - 1), dtype=torch.long)
    for r, (j, start, w_ids, _) in enumerate(chunk):
        n = len(w_ids) - 1
        ids[r, : n + 1] = torch.tensor(w_ids)
        attn[r, : n + 1] = 1
        cnt[r, :n] = torch.from_numpy(np.asarray(counts[j][start : start + n]))
    # counts were checked on the host (check_counts); they move once per batch
    return ids.to(dev), attn.to(dev), cnt.to(dev)


def _score_batch(model, ids, attn, cnt, bf16: bool) -> dict[str, np.ndarray]:
    """Per token of the batch (B, T): d, t, nll, correct, token_id, next_id on the host."""
    W, pad, dev = model.settings.w, model.pad_id, model.device
    i = torch.arange(W, device=dev)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    ex = pauses.expand_with_counts(
        inputs, W, model.pause_ids, cnt, attention_mask=attn[:, :-1], pad_id=pad
    )
    with autocast(dev, bf16 and dev.type == "cuda"):
        logits, _ = model(  # without the DK prior: added in fp32 by position_quantities
            ex.input_ids,
            position_ids=ex.position_ids,
            attention_mask=ex.attention_mask,
            prior=False,
        )
    # per position (B, L), then per token and step (B, T, W) by index: no (B, T, W, V).
    # ex.labels cannot serve: it has no target for a window's last token, `targets` does
    labels = targets.gather(1, ex.real_index.clamp_min(0))  # (B, L)
    log_d, log_t = (
        ex.to_steps(x)
        for x in vocab.position_quantities(logits, labels, model.dk_id, model.settings.psi)
    )
    taken = i <= cnt[..., None]  # (B, T, W) steps in context; past them to_steps repeats
    nan = torch.tensor(math.nan, device=dev)
    read = ex.gather_index.gather(-1, cnt[..., None])[..., 0]  # (B, T) position read out
    at = logits[torch.arange(ids.shape[0], device=dev)[:, None], read]  # (B, T, V)
    at = at.index_fill(-1, torch.tensor([model.dk_id], device=dev), -math.inf)
    row = {
        "d": torch.where(taken[..., : W - 1], log_d[..., : W - 1].exp(), nan),
        "t": torch.where(taken, log_t.exp(), nan),
        "nll": -log_t.gather(-1, cnt[..., None])[..., 0],
        "correct": at.max(-1).indices == targets,  # argmax (first maximum), faster on CPU
        "token_id": inputs,
        "next_id": targets,
    }
    return {k: v.cpu().numpy() for k, v in row.items()}  # one device-to-host sync per batch
