"""Distributions of one evaluation: pauses per token and the mean halting distribution (the
Latency page), and calibration of d_i against the gain of one more step (the Calibration
page). Calibration and the halting distribution come from the summaries stored with the
evaluation (analysis.summaries), so they cost the same at any size; they stay exact.
"""

from __future__ import annotations

import pandas as pd

from .queries import CLASS, _class, _measure
from .store import StoreError, require_eval
from .summaries import GRID


def calibration(con, eval_id: str) -> pd.DataFrame:
    """Per step i < W-1: Spearman (and Pearson) correlation of d_i with t_{i+1} - t_i over every
    row that has both, stored when the evaluation was written (analysis.summaries).

    Spearman is Pearson on average ranks: (rank ascending + the last tied position) / 2.
    """
    require_eval(con, eval_id)
    return con.execute(
        """SELECT step::BIGINT AS step, n, spearman, pearson, mean_d, mean_gain FROM calibration
           WHERE eval_id = ? AND token_class IS NULL ORDER BY step""",
        [eval_id],
    ).df()


# one cell of `bins` per axis: the stored GRID cells it holds, or the rows when bins does not
# divide GRID (the same binning as analysis.summaries: d in [0, 1], gain in [-1, 1])
_CELLS = """SELECT d_bin // ($g // $b) AS xb, gain_bin // ($g // $b) AS yb, sum(n) AS n
             FROM calibration_cells WHERE eval_id = $e AND step = $i GROUP BY ALL"""
_ROWS = """SELECT least(floor(x * $b), $b - 1) AS xb, least(floor((y + 1) / 2 * $b), $b - 1) AS yb,
                  count(*) AS n
           FROM (SELECT dk[$i + 1]::DOUBLE AS x, t[$i + 2]::DOUBLE - t[$i + 1]::DOUBLE AS y
                 FROM token_rows WHERE eval_id = $e)
           WHERE x IS NOT NULL AND y IS NOT NULL AND NOT isnan(x) AND NOT isnan(y) GROUP BY ALL"""


def calibration_density(con, eval_id: str, step: int = 0, bins: int = 40) -> pd.DataFrame:
    """2D histogram of (d_step, t_{step+1} - t_step): d in [0, 1], gain in [-1, 1], bin centres."""
    info = require_eval(con, eval_id)
    if info["w_max"] < 2:
        raise StoreError(f"{eval_id} has no pauses (W = 1): there is no d_i to calibrate")
    if not 0 <= step < info["w_max"] - 1:
        raise StoreError(
            f"step must be in 0..{info['w_max'] - 2} for W = {info['w_max']}, got {step}"
        )
    cells = _CELLS if bins > 0 and GRID % bins == 0 else _ROWS
    return con.execute(
        f"""SELECT (xb + 0.5) / $b AS d, -1 + (yb + 0.5) * 2 / $b AS gain, n::BIGINT AS n
            FROM ({cells}) ORDER BY 1, 2""",
        {"e": eval_id, "i": step, "b": bins}
        | ({"g": GRID} if cells is _CELLS else {}),
    ).df()


def pause_histogram(
    con,
    eval_id: str,
    measure: str = "expected",
    bins: int = 30,
    token: str | None = None,
    token_class: str | None = None,
) -> pd.DataFrame:
    """Distribution of pauses per token: `bins` equal bins over [0, W-1] for expected pauses,
    one row per count for greedy/observed. Columns lo, hi, n, fraction. With `token`, only
    that input-token type, in all its contexts (surrounding spaces ignored, as in `kwic`)."""
    info = require_eval(con, eval_id)
    x = _measure(info, measure)
    width = max(info["w_max"] - 1, 1) / bins if measure == "expected" else 1.0
    return con.execute(
        f"""SELECT b * $wd AS lo, CASE WHEN $cont THEN (b + 1) * $wd ELSE b * $wd END AS hi, count(*) AS n,
                   count(*) / sum(count(*)) OVER () AS fraction
            FROM (SELECT CASE WHEN $cont THEN least(floor({x} / $wd), $bins - 1) ELSE {x} END AS b
                  FROM token_rows WHERE eval_id = $e AND {x} IS NOT NULL AND {CLASS}
                    AND ($tok::VARCHAR IS NULL OR token_id IN (
                        SELECT token_id FROM vocab
                        WHERE eval_id = $e AND trim(token) = trim($tok::VARCHAR))))
            GROUP BY b ORDER BY b""",
        {
            "e": eval_id,
            "wd": width,
            "cont": measure == "expected",
            "bins": bins,
            "tok": token,
            "cls": _class(token_class),
        },
    ).df()


def step_distribution(con, eval_id: str, token_class: str | None = None) -> pd.DataFrame:
    """Mean of s over tokens: the share of answers given after 0..W-1 pauses (from the sums
    stored with the evaluation)."""
    require_eval(con, eval_id)
    return con.execute(
        f"""SELECT step::BIGINT AS pauses, sum(sum_s) / sum(n) AS mean_s FROM step_stats
            WHERE eval_id = $e AND {CLASS} GROUP BY step ORDER BY step""",
        {"e": eval_id, "cls": _class(token_class)},
    ).df()
