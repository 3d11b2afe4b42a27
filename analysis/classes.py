"""Measures per token class: does the model wait where waiting pays?

Every evaluation row carries `token_class`, the class of the token it predicts: `answer`
(the answer of a synthetic line, e.g. the " 4" "32" of `47 + 385 = 432`), `synthetic` (the
rest of such a line) or `natural` (everything else); see cyb_core.synthetic.classify.

The gain of waiting at step i is t_{i+1} - t_i, how much more probability the target gets
from one more step. Its plain Spearman correlation with d_i is confounded: easy tokens have
both a low d and a small gain (t is already near 1). `class_calibration` therefore also
gives the partial Spearman correlation given t_i (Pearson on ranks, with t_i's ranks
partialled out), which asks: among tokens the model finds equally hard at step i, does it
wait more for those where waiting helps?
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cyb_core import synthetic

from . import store, summaries
from .store import StoreError, require_eval

CLASSES = ("answer", "synthetic", "natural")


def _require_classes(con, eval_id: str) -> dict:
    info = require_eval(con, eval_id)
    n = con.execute(
        "SELECT sum(n) FROM class_stats WHERE eval_id = ? AND token_class IS NOT NULL", [eval_id]
    ).fetchall()[0][0]
    if not n:
        raise StoreError(f"{eval_id} was stored before token classes existed; evaluate it again")
    return info


def class_summary(con, eval_id: str) -> pd.DataFrame:
    """Per class: tokens, nll, accuracy, expected pauses, pause rate (greedy pauses > 0) and
    the mean gain of waiting to the last step, log t_{W-1} - log t_0 (NaN when W = 1 or
    adaptive, where later steps were not computed)."""
    _require_classes(con, eval_id)
    return con.execute(
        """SELECT token_class, n, sum_nll / n AS nll, n_correct / n AS accuracy,
                  sum_expected / n AS expected_pauses, n_paused / n AS pause_rate,
                  sum_log_gain / nullif(n_log_gain, 0) AS log_gain_last,
                  sum_log_t0 / nullif(n_log_t0, 0) AS log_t0
           FROM class_stats WHERE eval_id = ?
           ORDER BY array_position(['answer', 'synthetic', 'natural'], token_class)""",
        [eval_id],
    ).df()


def class_calibration(con, eval_id: str) -> pd.DataFrame:
    """Per class and step i < W-1: Spearman of d_i with the gain t_{i+1} - t_i, the same
    partial on t_i, and the means of d_i and of the gain."""
    info = _require_classes(con, eval_id)
    if info["w_max"] < 2:
        raise StoreError(f"{eval_id} has no pauses (W = 1): there is no d_i to calibrate")
    return con.execute(
        """SELECT token_class, step::BIGINT AS step, n, spearman, partial_spearman, mean_d, mean_gain
           FROM calibration WHERE eval_id = ? AND token_class IS NOT NULL
           ORDER BY array_position(['answer', 'synthetic', 'natural'], token_class), step""",
        [eval_id],
    ).df()


def retag(db, eval_ids: list[str] | None = None, timeout: float = 120.0) -> int:
    """Recompute `token_class` of stored evaluations from their stored text and token spans (after
    the classifier changed, or for evaluations stored before classes existed), in one
    transaction; returns the number of rows tagged."""
    with store.connect_write(db, timeout) as con:
        ids = eval_ids or [r[0] for r in con.execute("SELECT eval_id FROM evals").fetchall()]
        con.begin()
        n = 0
        for eid in ids:
            texts = dict(
                con.execute("SELECT doc_id, text FROM docs WHERE eval_id = ?", [eid]).fetchall()
            )
            rows = con.execute(
                "SELECT doc_id, idx, char_start, char_start + char_len AS char_end FROM token_rows "
                "WHERE eval_id = ? ORDER BY doc_id, idx",
                [eid],
            ).df()
            parts = []
            for doc_id, g in rows.groupby("doc_id", sort=False):
                cls = synthetic.predicted_classes(
                    texts[doc_id], g["char_start"].to_numpy(), g["char_end"].to_numpy()
                )
                parts.append(
                    pd.DataFrame(
                        {
                            "doc_id": doc_id,
                            "idx": g["idx"].to_numpy(),
                            "c": np.array(synthetic.CLASSES)[cls],
                        }
                    )
                )
            if not parts:
                continue
            con.register("retag_rows", pd.concat(parts, ignore_index=True))
            con.execute(
                "UPDATE token_rows SET token_class = r.c FROM retag_rows r "
                "WHERE token_rows.eval_id = ? AND token_rows.doc_id = r.doc_id "
                "AND token_rows.idx = r.idx",
                [eid],
            )
            con.unregister("retag_rows")
            summaries.refresh(con, eid)  # the class sums and calibration follow the new classes
            n += sum(len(p) for p in parts)
        con.commit()
    return n
