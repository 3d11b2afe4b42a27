"""The per-group building blocks of analysis.queries' pause rates, contrasts and run
comparisons: group statistics and compact histograms in DuckDB, bootstrap means in numpy.

Bootstrap intervals resample from per-group histograms (value bins of 1 / BIN pauses, each
bin at the mean of its values, so the point estimate is exact); tokens are treated as
independent draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BIN = 100  # histogram bins per pause for the bootstrap
# the token_rows columns that analysis.queries.GROUPS, CLASS and _rows read
_GROUP_COLUMNS = "token_id, next_id, upos, tag, morph, word_start, token_class"
# the one token-class condition of every per-token query; $cls is bound (None: all rows)
CLASS = "($cls::VARCHAR IS NULL OR token_class = $cls::VARCHAR)"


def _rows(g: str, rows: str = "token_rows", e: str = "$e") -> str:
    """`rows` (a relation of token_rows columns of evaluation `e`) with the decoded token and
    next_token where the group expression `g` reads them (the contraction groups)."""
    if "token" not in g.replace("token_class", ""):
        return rows
    return f"""(SELECT r.*, a.token, b.token AS next_token FROM {rows} r
                LEFT JOIN vocab a ON a.eval_id = {e} AND a.token_id = r.token_id
                LEFT JOIN vocab b ON b.eval_id = {e} AND b.token_id = r.next_id)"""


def _group_hist(con, eval_id: str, g: str, x: str, cls: str | None) -> pd.DataFrame:
    return con.execute(
        f"""SELECT {g} AS grp, round({x} * {BIN}) AS bin, count(*) AS n, avg({x}) AS v
            FROM {_rows(g)} WHERE eval_id = $e AND {x} IS NOT NULL AND ({g}) IS NOT NULL AND {CLASS} GROUP BY ALL""",
        {"e": eval_id, "cls": cls},
    ).df()


def _group_stats(con, eval_id: str, g: str, x: str, cls: str | None) -> pd.DataFrame:
    return con.execute(
        f"""SELECT {g} AS grp, count(*) AS n, avg({x}) AS mean, median({x}) AS median,
                   coalesce(var_samp({x}), 0) AS variance
            FROM {_rows(g)} WHERE eval_id = $e AND {x} IS NOT NULL AND ({g}) IS NOT NULL AND {CLASS}
            GROUP BY ALL""",
        {"e": eval_id, "cls": cls},
    ).df()


def _boot_means(hist: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bootstrap distribution of the mean per group, by multinomial resampling of its histogram."""
    out = {}
    for grp, h in hist.groupby("grp", sort=False):
        counts, values = h["n"].to_numpy(np.int64), h["v"].to_numpy(np.float64)
        n = counts.sum()
        draws = rng.multinomial(n, counts / n, size=n_boot)  # (B, bins)
        out[grp] = draws @ values / n
    return out


def _cohens_d(a: pd.Series | dict, b: pd.Series | dict) -> float:
    dof = a["n"] + b["n"] - 2
    pooled = (
        np.sqrt(((a["n"] - 1) * a["variance"] + (b["n"] - 1) * b["variance"]) / dof)
        if dof > 0
        else np.nan
    )
    return float((b["mean"] - a["mean"]) / pooled) if pooled > 0 else np.nan


def _paired_hist(
    con, eval_a: str, eval_b: str, g: str, xa: str, xb: str, cls: str | None
) -> pd.DataFrame:
    """Histogram of per-token differences b - a, grouped by run A's annotation (and class).
    Only for evaluations of the same tokens (`_same_tokens`): their rows are stored in the
    same order, so row k of one is row k of the other (a positional join, no hash join)."""
    # only the columns a group or the class reads: `*` would carry run A's lists through the join
    pairs = f"""(SELECT a.* EXCLUDE (x), b.x - a.x AS diff
                 FROM (SELECT {_GROUP_COLUMNS}, {xa} AS x FROM token_rows WHERE eval_id = $a) a
                 POSITIONAL JOIN (SELECT {xb} AS x FROM token_rows WHERE eval_id = $b) b)"""
    return con.execute(
        f"""SELECT {g} AS grp, round(diff * {BIN}) AS bin, count(*) AS n, avg(diff) AS v
            FROM {_rows(g, pairs, "$a")}
            WHERE diff IS NOT NULL AND ({g}) IS NOT NULL AND {CLASS} GROUP BY ALL""",
        {"a": eval_a, "b": eval_b, "cls": cls},
    ).df()


def _same_tokens(con, eval_a: str, eval_b: str, n_a: int, n_b: int) -> bool:
    """Both evaluations scored the same tokens in the same order: equal row counts and equal
    fingerprints of (row, doc_id, idx, token_id) (evals.tokens_key, set when written)."""
    if n_a != n_b:
        return False
    keys = con.execute(
        "SELECT tokens_key FROM evals WHERE eval_id IN (?, ?)", [eval_a, eval_b]
    ).fetchall()
    return len(keys) == 2 and keys[0][0] is not None and keys[0][0] == keys[1][0]
