"""Analysis queries: plain functions (connection, parameters) -> DataFrame.

Aggregation happens in DuckDB; values are bound parameters and SQL identifiers or
expressions come only from constant maps (MEASURES and GROUPS, in analysis.groups with the
per-group queries, which are importable from here as well). Bootstrap intervals resample in numpy
from compact per-group histograms (value bins of 0.01 pauses, each bin at the mean of its
values, so the point estimate is exact); tokens are treated as independent draws.

The per-token queries take an optional `token_class` (analysis.classes.CLASSES: the class of
the predicted token) and then count only its rows; None counts every row. The queries over
whole runs and evaluations live in analysis.runs and are importable from here as well.
"""

from __future__ import annotations

import pandas as pd

from . import large_summaries
from .groups import CLASS, _class, _measure
from .groups import GROUPS as GROUPS
from .groups import MEASURES as MEASURES
from .groups import compare_of as compare_of
from .groups import compare_runs as compare_runs
from .groups import contrast as contrast
from .groups import contrast_of as contrast_of
from .groups import diff_boots as diff_boots
from .groups import group_boots as group_boots
from .groups import group_summary as group_summary
from .groups import paired_hist as paired_hist
from .groups import pause_rates as pause_rates
from .groups import rates_of as rates_of
from .quadrants import quadrants
from .runs import eval_classes as eval_classes
from .runs import frontier as frontier
from .runs import run_rows as run_rows
from .runs import run_summary as run_summary
from .runs import training_curves as training_curves
from .store import StoreError, require_eval
from .summaries import GRID

# ----------------------------------------------------------------------------- token types


def token_stats(
    con,
    eval_id: str,
    measure: str = "expected",
    min_count: int = 20,
    token_class: str | None = None,
) -> pd.DataFrame:
    """Per input-token type: count, mean, median and variance of the pause count."""
    x, c = _measure(require_eval(con, eval_id), measure), _class(token_class)
    if large_summaries.stored(con, "type_stats", eval_id):
        return large_summaries.type_stats(con, eval_id, measure, min_count, c)
    return con.execute(
        f"""SELECT s.token_id, v.token, s.n, s.mean, s.median, s.variance
            FROM (SELECT token_id, count(*) AS n, avg({x}) AS mean, median({x}) AS median,
                         var_samp({x}) AS variance
                  FROM token_rows WHERE eval_id = $e AND {x} IS NOT NULL AND {CLASS}
                  GROUP BY token_id HAVING count(*) >= $min) s
            LEFT JOIN vocab v ON v.eval_id = $e AND v.token_id = s.token_id
            ORDER BY s.n DESC, s.token_id""",
        {"e": eval_id, "min": min_count, "cls": c},
    ).df()


def token_quadrants(
    con,
    eval_id: str,
    measure: str = "expected",
    min_count: int = 20,
    top: int = 10,
    token_class: str | None = None,
) -> pd.DataFrame:
    """The paper's Table 3 as four quadrants (`quadrants` of `token_stats`)."""
    return quadrants(token_stats(con, eval_id, measure, min_count, token_class), top)


def kwic(
    con,
    eval_id: str,
    token: str | None = None,
    token_id: int | None = None,
    width: int = 40,
    limit: int = 500,
    exact: bool = False,
    token_class: str | None = None,
) -> pd.DataFrame:
    """Every occurrence of a token type with its context and pause counts.

    `token` matches the decoded input token with surrounding spaces ignored (" wasn" and
    "wasn" both match "wasn") unless `exact`; or give `token_id`.
    """
    require_eval(con, eval_id)
    if (token is None) == (token_id is None):
        raise StoreError("give a token or a token id")
    return con.execute(
        f"""WITH ids AS (
               SELECT token_id FROM vocab
               WHERE eval_id = $e AND CASE WHEN $id::INTEGER IS NOT NULL THEN token_id = $id::INTEGER
                                           WHEN $exact THEN token = $tok::VARCHAR
                                           ELSE trim(token) = trim($tok::VARCHAR) END),
           t AS (SELECT * FROM token_rows
                 WHERE eval_id = $e AND token_id IN (SELECT token_id FROM ids) AND {CLASS}
                 ORDER BY doc_id, idx LIMIT $limit)
           SELECT t.doc_id, t.idx, a.token, b.token AS next_token,
                  regexp_replace(substr(d.text, greatest(t.char_start - $w, 0) + 1,
                                        t.char_start - greatest(t.char_start - $w, 0)), '\\s+', ' ', 'g') AS left_context,
                  substr(d.text, t.char_start + 1, t.char_len) AS token_text,
                  regexp_replace(substr(d.text, t.char_start + t.char_len + 1, $w), '\\s+', ' ', 'g') AS right_context,
                  t.expected_pauses, t.greedy_pauses, t.pauses, t.nll, t.correct, t.word, t.upos, t.tag
           FROM t JOIN docs d ON d.eval_id = t.eval_id AND d.doc_id = t.doc_id
           LEFT JOIN vocab a ON a.eval_id = $e AND a.token_id = t.token_id
           LEFT JOIN vocab b ON b.eval_id = $e AND b.token_id = t.next_id
           ORDER BY t.doc_id, t.idx""",
        {
            "e": eval_id,
            "w": width,
            "id": token_id,
            "tok": token,
            "exact": exact,
            "limit": limit,
            "cls": _class(token_class),
        },
    ).df()


# ----------------------------------------------------------------------------- calibration and latency


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
        {"e": eval_id, "i": step, "b": bins} | ({"g": GRID} if cells is _CELLS else {}),
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
