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

from . import store
from .store import StoreError, require_eval

CLASSES = ("answer", "synthetic", "natural")


def _rank(col: str, part: str) -> str:
    """Average rank of `col` within `part` (ties share the mean of their positions)."""
    return (
        f"(rank() OVER (PARTITION BY {part} ORDER BY {col}) + count(*) OVER (PARTITION BY {part}) + 1"
        f" - rank() OVER (PARTITION BY {part} ORDER BY {col} DESC)) / 2.0"
    )


def _require_classes(con, eval_id: str) -> dict:
    info = require_eval(con, eval_id)
    n = con.execute(
        "SELECT count(*) FROM tokens WHERE eval_id = ? AND token_class IS NOT NULL", [eval_id]
    ).fetchall()[0][0]
    if n == 0:
        raise StoreError(f"{eval_id} was stored before token classes existed; evaluate it again")
    return info


def class_summary(con, eval_id: str) -> pd.DataFrame:
    """Per class: tokens, nll, accuracy, expected pauses, pause rate (greedy pauses > 0) and
    the mean gain of waiting to the last step, log t_{W-1} - log t_0 (NaN when W = 1 or
    adaptive, where later steps were not computed)."""
    _require_classes(con, eval_id)
    return con.execute(
        """SELECT token_class, count(*) AS n, avg(nll) AS nll, avg(correct::INT) AS accuracy,
                  avg(expected_pauses) AS expected_pauses, avg((greedy_pauses > 0)::INT) AS pause_rate,
                  avg(CASE WHEN len(t) > 1 THEN ln(greatest(t[len(t)], 1e-30)) - ln(greatest(t[1], 1e-30))
                      END) AS log_gain_last,
                  avg(ln(greatest(t[1], 1e-30))) AS log_t0
           FROM tokens WHERE eval_id = ? GROUP BY token_class
           ORDER BY array_position(['answer', 'synthetic', 'natural'], token_class)""",
        [eval_id],
    ).df()


def class_calibration(con, eval_id: str) -> pd.DataFrame:
    """Per class and step i < W-1: Spearman of d_i with the gain t_{i+1} - t_i, the same
    partial on t_i, and the means of d_i and of the gain."""
    info = _require_classes(con, eval_id)
    if info["w_max"] < 2:
        raise StoreError(f"{eval_id} has no pauses (W = 1): there is no d_i to calibrate")
    part = "c, i"
    return con.execute(
        f"""WITH v AS (SELECT token_class AS c, i, dk[i + 1] AS x, t[i + 2] - t[i + 1] AS y, t[i + 1] AS z
                     FROM (SELECT unnest(range(len(dk))) AS i, dk, t, token_class
                           FROM tokens WHERE eval_id = $e)),
              f AS (SELECT * FROM v WHERE x IS NOT NULL AND y IS NOT NULL AND z IS NOT NULL
                                      AND NOT isnan(x) AND NOT isnan(y) AND NOT isnan(z)),
              r AS (SELECT c, i, x, y, {_rank("x", part)} AS rx, {_rank("y", part)} AS ry,
                           {_rank("z", part)} AS rz FROM f),
              k AS (SELECT c, i, count(*) AS n, corr(rx, ry) AS rxy, corr(rx, rz) AS rxz,
                           corr(ry, rz) AS ryz, avg(x) AS mean_d, avg(y) AS mean_gain
                    FROM r GROUP BY c, i)
        SELECT c AS token_class, i AS step, n, rxy AS spearman,
               CASE WHEN (1 - rxz * rxz) * (1 - ryz * ryz) > 1e-9  -- else t_i fixes a rank: undefined
                    THEN (rxy - rxz * ryz) / sqrt((1 - rxz * rxz) * (1 - ryz * ryz)) END AS partial_spearman,
               mean_d, mean_gain
        FROM k ORDER BY array_position(['answer', 'synthetic', 'natural'], c), i""",
        {"e": eval_id},
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
                "SELECT doc_id, idx, char_start, char_end FROM tokens WHERE eval_id = ? ORDER BY doc_id, idx",
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
                "UPDATE tokens SET token_class = r.c FROM retag_rows r "
                "WHERE tokens.eval_id = ? AND tokens.doc_id = r.doc_id AND tokens.idx = r.idx",
                [eid],
            )
            con.unregister("retag_rows")
            n += sum(len(p) for p in parts)
        con.commit()
    return n
