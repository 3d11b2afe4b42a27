"""Dense (parallel) evaluation: one forward pass over the Recipe 1 expanded sequence.

For every real input token x_t (followed by W-1 pauses) with target x_{t+1}:
d_i, t_i, s_i (method.md section 2, the model's own stopping: omega one-hot last,
gamma 1), expected and greedy pause counts, -log p(y) and whether the answer at
the greedy stop is right. Documents are scored independently: each is cut into
windows of `seq_len` input tokens (a fresh context per window), and every token of
the document, plus a final end-of-text, is a target exactly once.

EvalResult, the per-token result of every evaluation, and `doc_windows`, the way documents are
cut into contexts, live here too; cyb_core.adaptive (Recipe 2) fills the same structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import losses, pauses, variants
from .precision import autocast


@dataclass
class EvalResult:
    """Per real token, N rows in document order; W = the model's steps per token.

    doc: (N,) document index; idx: (N,) position of the input token in its document;
    token_id / next_id: (N,) input token x_t and target x_{t+1};
    char_start / char_end: (N,) character span of x_t in its document (end-of-text: empty span);
    d: (N, W-1) don't-know probabilities of steps 0..W-2 (d_{W-1} = 0 is left out);
    t: (N, W) target probability at each step, DK renormalised away;
    s: (N, W) probability that the answer is given at step i;
    expected_pauses: (N,) sum_i i s_i; greedy_pauses: (N,) first i with d_i < 0.5;
    nll: (N,) -log p(y); correct: (N,) the non-DK argmax at the greedy stop equals the target;
    pauses: (N,) pauses actually taken (adaptive evaluation only, None in dense mode).

    Adaptive evaluation (cyb_core.adaptive) fills the same structure: d and t are NaN for the
    steps it did not take, s is one-hot at the step where it answered, expected and greedy
    pauses equal `pauses`, and nll is -log t at that step.
    """

    doc: np.ndarray
    idx: np.ndarray
    token_id: np.ndarray
    next_id: np.ndarray
    char_start: np.ndarray
    char_end: np.ndarray
    d: np.ndarray
    t: np.ndarray
    s: np.ndarray
    expected_pauses: np.ndarray
    greedy_pauses: np.ndarray
    nll: np.ndarray
    correct: np.ndarray
    pauses: np.ndarray | None = None

    @property
    def ppl(self) -> float:
        return math.exp(float(self.nll.mean()))

    def summary(self) -> dict:
        return {
            "n_tokens": len(self.nll),
            "ppl": self.ppl,
            "nll": float(self.nll.mean()),
            "mean_expected_pauses": float(self.expected_pauses.mean()),
            "mean_greedy_pauses": float(self.greedy_pauses.mean()),
            "accuracy": float(self.correct.mean()),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per token; vector columns (d, t, s) hold lists."""
        cols = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                cols[f.name] = list(v) if v.ndim == 2 else v
        return pd.DataFrame(cols)


def doc_windows(docs: list[str], tokenizer, seq_len: int):
    """Yield (doc index, first token index, ids of up to seq_len + 1 tokens, char offsets)."""
    enc = tokenizer(docs, add_special_tokens=False, return_offsets_mapping=True)
    for j, (ids, offs) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
        ids = [*ids, tokenizer.eos_token_id]
        offs = [*offs, (len(docs[j]), len(docs[j]))]
        for start in range(0, len(ids) - 1, seq_len):
            yield j, start, ids[start : start + seq_len + 1], offs[start : start + seq_len]


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
    model.eval()
    W, pad = model.settings.w, model.pad_id
    readout = variants.get(model.settings.variant).readout
    windows = list(doc_windows(docs, model.tokenizer, seq_len))
    parts: dict[str, list] = {f.name: [] for f in fields(EvalResult) if f.name != "pauses"}
    bar = tqdm(
        total=sum(len(w[2]) - 1 for w in windows),
        disable=not progress,
        unit="tok",
        desc="dense eval",
    )
    for b in range(0, len(windows), batch_size):
        chunk = windows[b : b + batch_size]
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
                ex.input_ids, position_ids=ex.position_ids, attention_mask=ex.attention_mask
            )
        logits = ex.to_steps(logits).float()  # (B, T, W, V)
        q = losses.step_quantities(logits, targets, model.dk_id)
        policy = losses.readout(q, readout)  # tbys answers at the last step, control at step 0
        log_s, nll = policy.log_s, -losses.log_p(policy)
        # the step the model answers at: first d < 0.5 under its own stopping, else the fixed step
        greedy = losses.greedy_pauses(q.log_d) if readout == "own" else log_s.argmax(-1)
        B, T, _, V = logits.shape
        at_stop = logits.gather(2, greedy[:, :, None, None].expand(B, T, 1, V)).squeeze(
            2
        )  # (B, T, V), a copy
        at_stop[..., model.dk_id] = -math.inf
        correct = at_stop.argmax(-1) == targets
        row = {
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
        row = {k: v.cpu().numpy() for k, v in row.items()}  # one CPU-GPU sync per batch
        for r, (j, start, w_ids, offs) in enumerate(chunk):
            n = len(w_ids) - 1
            for k, v in row.items():
                parts[k].append(v[r, :n])
            parts["doc"].append(np.full(n, j))
            parts["idx"].append(np.arange(start, start + n))
            parts["char_start"].append(np.array([o[0] for o in offs[:n]]))
            parts["char_end"].append(np.array([o[1] for o in offs[:n]]))
            bar.update(n)
    bar.close()
    return EvalResult(**{k: np.concatenate(v) for k, v in parts.items()})
