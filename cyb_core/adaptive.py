"""Adaptive (Recipe 2) evaluation: teacher-forced, a pause fed only when the model asks.

Every row reads its document one position per step through the Recipe 2 decoding loop of
cyb_core.decoding: the true next token is fed once the model answers, a pause while it says
don't-know. Per real token it records the d_i and t_i of the steps taken, the pauses taken,
-log t at the answer step and whether that answer is right, in an EvalResult
(cyb_core.eval_result) (steps not taken are NaN, s is one-hot at the answer step).

    res = adaptive_eval(model, docs)     # EvalResult with `pauses` filled
"""

from __future__ import annotations

import itertools
import math
from dataclasses import fields
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from .decoding import Context, Out, poll_every, run_adaptive, wants_pause
from .dense import doc_windows
from .eval_result import EvalResult


class _Record:
    """Teacher-forced quantities per (row, real token[, step]); index T is a scratch slot."""

    def __init__(self, B: int, T: int, W: int, dk_id: int, device):
        nan = float("nan")
        self.T, self.rows = T, torch.arange(B, device=device)
        self.dk = torch.tensor([dk_id], device=device)
        self.d = torch.full((B, T + 1, W), nan, device=device)  # column W-1 (d = 0) is dropped
        self.t = torch.full((B, T + 1, W), nan, device=device)
        self.pauses = torch.zeros((B, T + 1), dtype=torch.long, device=device)
        self.nll = torch.zeros((B, T + 1), device=device)
        self.correct = torch.zeros((B, T + 1), dtype=torch.bool, device=device)

    def step(self, t, k, d, logp, target, answer, done) -> None:
        at = torch.where(done, self.T, t)
        no_dk = logp.index_fill(1, self.dk, -math.inf)
        log_t = logp.gather(1, target[:, None])[:, 0] - no_dk.logsumexp(-1)  # DK renormalised away
        self.d[self.rows, at, k] = d
        self.t[self.rows, at, k] = log_t.exp()
        at = torch.where(answer, t, self.T)
        self.pauses[self.rows, at] = k
        self.nll[self.rows, at] = -log_t
        self.correct[self.rows, at] = no_dk.max(-1).indices == target  # argmax, faster on CPU


@torch.no_grad()
def adaptive_eval(
    model,
    docs: list[str],
    *,
    seq_len: int = 128,
    batch_size: int = 16,
    dk_threshold: float | None = 0.5,
    seed: int = 0,
    progress: bool = True,
    bf16: bool = False,
) -> EvalResult:
    """Teacher-forced Recipe 2 evaluation: the true next token is fed, pauses when asked.

    Windows as in dense_eval. dk_threshold: pause while d_i >= it; None draws DK with
    probability d_i (reproducible for a fixed seed and batch_size). The result is filled as
    the EvalResult docstring says: d, t NaN at steps not taken, s one-hot at the answer step.
    """
    if not docs or not any(d.strip() for d in docs):
        raise ValueError("nothing to evaluate: the text is empty")
    if dk_threshold is not None and not 0.0 <= dk_threshold <= 1.0:
        raise ValueError(f"dk_threshold must be in [0, 1] or None, got {dk_threshold}")
    model.eval()
    W, dev = model.settings.w, model.device
    model.check_window(seq_len)
    policy = "sample" if dk_threshold is None else "threshold"
    gen = torch.Generator(device=dev).manual_seed(seed)
    asks = partial(wants_pause, policy, dk_threshold, gen)
    # streamed as in dense_eval: windows are cut from compact token arrays a batch at a time
    N, windows = doc_windows(docs, model.tokenizer, seq_len)
    parts: dict[str, list] = {f.name: [] for f in fields(EvalResult)}
    bar = tqdm(
        total=N,  # every token is an input once
        disable=not progress,
        unit="tok",
        desc="adaptive eval",
    )
    while chunk := list(itertools.islice(windows, batch_size)):
        forced = [w[2] for w in chunk]
        rec = _Record(len(chunk), max(map(len, forced)), W, model.dk_id, dev)
        out = Out(model, len(chunk), 0, None, every=poll_every(dev, W))
        for _ in run_adaptive(model, forced, Context(model, True, bf16), out, asks, rec=rec):
            pass
        got = {k: getattr(rec, k).cpu().numpy() for k in ("d", "t", "pauses", "nll", "correct")}
        for r, (j, start, w_ids, offs) in enumerate(chunk):
            n = len(w_ids) - 1
            p = got["pauses"][r, :n]
            row = {
                "doc": np.full(n, j),
                "idx": np.arange(start, start + n),
                "token_id": np.array(w_ids[:-1]),
                "next_id": np.array(w_ids[1:]),
                "char_start": np.array([o[0] for o in offs[:n]]),
                "char_end": np.array([o[1] for o in offs[:n]]),
                "d": got["d"][r, :n, : W - 1],
                "t": got["t"][r, :n],
                "s": np.eye(W)[p],
                "expected_pauses": p.astype(float),
                "greedy_pauses": p,
                "pauses": p,
                "nll": got["nll"][r, :n],
                "correct": got["correct"][r, :n],
            }
            for key, v in row.items():
                parts[key].append(v)
            bar.update(n)
    bar.close()
    return EvalResult(**{k: np.concatenate(v) for k, v in parts.items()})
