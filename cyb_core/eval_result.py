"""EvalResult: the per-token result of every evaluation (dense, adaptive, forced)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
    pauses: (N,) pauses in context (adaptive and forced evaluations; None in dense mode).

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

    @property
    def positions(self) -> float:
        """Positions per real token: 1 + the mean pauses in context (dense: W, all of them)."""
        if self.pauses is None:
            return float(self.t.shape[1])
        return 1.0 + float(self.pauses.mean())

    def summary(self) -> dict:
        return {
            "n_tokens": len(self.nll),
            "ppl": self.ppl,
            "nll": float(self.nll.mean()),
            "mean_expected_pauses": float(self.expected_pauses.mean()),
            "mean_greedy_pauses": float(self.greedy_pauses.mean()),
            "accuracy": float(self.correct.mean()),
            "positions": self.positions,
        }
