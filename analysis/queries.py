"""Analysis queries: plain functions (connection, parameters) -> DataFrame.

Aggregation happens in DuckDB; values are bound parameters and SQL identifiers or
expressions come only from the constant maps below. Bootstrap intervals resample in numpy
from compact per-group histograms (value bins of 0.01 pauses, each bin at the mean of its
values, so the point estimate is exact); tokens are treated as independent draws.

The per-token queries take an optional `token_class` (analysis.classes.CLASSES: the class of
the predicted token) and then count only its rows; None counts every row. The queries over
whole runs and evaluations live in analysis.runs and are importable from here as well.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cyb_core.names import observes_pauses

from .classes import CLASSES
from .groups import (
    CLASS,
    _boot_means,
    _cohens_d,
    _group_hist,
    _group_stats,
    _paired_hist,
    _same_tokens,
)
from .quadrants import quadrants
from .runs import eval_classes as eval_classes
from .runs import frontier as frontier
from .runs import run_rows as run_rows
from .runs import run_summary as run_summary
from .runs import training_curves as training_curves
from .store import StoreError, require_eval
from .summaries import GRID

# stored as FLOAT and USMALLINT (schema.sql); medians and differences are taken in these types
MEASURES = {
    "expected": "expected_pauses::DOUBLE",
    "greedy": "greedy_pauses::INTEGER",
    "observed": "pauses::INTEGER",
}
_APOS = "[''’]"  # an apostrophe class, quoted for a SQL string literal
GROUPS = {
    "upos": "upos",
    "tag": "tag",
    "number": "nullif(regexp_extract(morph, 'Number=([A-Za-z]+)', 1), '')",
    "word_start": "CASE WHEN word_start THEN 'word-initial' WHEN NOT word_start THEN 'continuation' END",
    # model-token view of contractions: "wasn" + "'t", "they" + "'ll"
    "contraction": f"""CASE
        WHEN regexp_matches(token, '^{_APOS}t$', 'i') THEN 'clitic ''t'
        WHEN regexp_matches(token, '^{_APOS}(s|re|ve|ll|d|m)$', 'i') THEN 'clitic ''s ''re ''ve ''ll ''d ''m'
        WHEN regexp_matches(next_token, '^{_APOS}t$', 'i') AND regexp_matches(token, 'n$', 'i')
            THEN 'stem before ''t'
        WHEN regexp_matches(next_token, '^{_APOS}(s|re|ve|ll|d|m)$', 'i') AND regexp_matches(token, '[a-z]$', 'i')
            THEN 'stem before ''s ''re ''ve ''ll ''d ''m'
        ELSE 'other' END""",
}


def _measure(info: dict, measure: str) -> str:
    if measure not in MEASURES:
        raise StoreError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if measure == "observed" and not observes_pauses(info["mode"]):
        raise StoreError(
            f"{info['eval_id']} is a dense evaluation: observed pauses exist only where pauses "
            "were placed per token (adaptive, shuffled, uniformK)"
        )
    return MEASURES[measure]


def _class(token_class: str | None) -> str | None:
    if token_class is not None and token_class not in CLASSES:
        raise StoreError(f"token class must be one of {', '.join(CLASSES)}, got {token_class!r}")
    return token_class


def _group(by: str) -> str:
    if by not in GROUPS:
        raise StoreError(f"group by one of {', '.join(GROUPS)}, got {by!r}")
    return GROUPS[by]


# ----------------------------------------------------------------------------- token types


def token_stats(
    con,
    eval_id: str,
    measure: str = "expected",
    min_count: int = 20,
    token_class: str | None = None,
) -> pd.DataFrame:
    """Per input-token type: count, mean, median and variance of the pause count."""
    x = _measure(require_eval(con, eval_id), measure)
    return con.execute(
        f"""SELECT s.token_id, v.token, s.n, s.mean, s.median, s.variance
            FROM (SELECT token_id, count(*) AS n, avg({x}) AS mean, median({x}) AS median,
                         var_samp({x}) AS variance
                  FROM token_rows WHERE eval_id = $e AND {x} IS NOT NULL AND {CLASS}
                  GROUP BY token_id HAVING count(*) >= $min) s
            LEFT JOIN vocab v ON v.eval_id = $e AND v.token_id = s.token_id
            ORDER BY s.n DESC, s.token_id""",
        {"e": eval_id, "min": min_count, "cls": _class(token_class)},
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


# ----------------------------------------------------------------------------- groups, CIs, effect sizes


def pause_rates(
    con,
    eval_id: str,
    by: str = "upos",
    measure: str = "expected",
    min_count: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    token_class: str | None = None,
) -> pd.DataFrame:
    """Mean pause count per group with a 95% bootstrap interval; `by` is one of GROUPS."""
    x, g, c = _measure(require_eval(con, eval_id), measure), _group(by), _class(token_class)
    stats = _group_stats(con, eval_id, g, x, c)
    stats = stats[stats["n"] >= min_count].sort_values("mean").reset_index(drop=True)
    boots = _boot_means(_group_hist(con, eval_id, g, x, c), n_boot, np.random.default_rng(seed))
    ci = np.array([np.percentile(boots[k], [2.5, 97.5]) for k in stats["grp"]]).reshape(-1, 2)
    return stats.rename(columns={"grp": by}).assign(ci_low=ci[:, 0], ci_high=ci[:, 1])


def contrast(
    con,
    eval_id: str,
    by: str,
    a: str,
    b: str,
    measure: str = "expected",
    n_boot: int = 1000,
    seed: int = 0,
    token_class: str | None = None,
) -> pd.DataFrame:
    """Two groups of one evaluation (NNS vs NN, Plur vs Sing): difference b - a, 95% CI, Cohen's d."""
    x, g, c = _measure(require_eval(con, eval_id), measure), _group(by), _class(token_class)
    stats = _group_stats(con, eval_id, g, x, c).set_index("grp")
    for k in (a, b):
        if k not in stats.index:
            raise StoreError(
                f"no tokens in group {k!r} of {by}; groups: {', '.join(map(str, stats.index[:20]))}"
            )
    boots = _boot_means(_group_hist(con, eval_id, g, x, c), n_boot, np.random.default_rng(seed))
    diff = boots[b] - boots[a]
    sa, sb = stats.loc[a], stats.loc[b]
    return pd.DataFrame(
        [
            {
                "by": by,
                "group_a": a,
                "group_b": b,
                "n_a": sa["n"],
                "n_b": sb["n"],
                "mean_a": sa["mean"],
                "mean_b": sb["mean"],
                "diff": sb["mean"] - sa["mean"],
                "ci_low": np.percentile(diff, 2.5),
                "ci_high": np.percentile(diff, 97.5),
                "cohens_d": _cohens_d(sa, sb),
            }
        ]
    )


def compare_runs(
    con,
    eval_a: str,
    eval_b: str,
    by: str = "upos",
    measure: str = "expected",
    min_count: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    token_class: str | None = None,
) -> pd.DataFrame:
    """Per group, run B minus run A: difference of mean pauses with a 95% CI and Cohen's d.

    When both evaluations scored the same tokens (same text and tokenizer) the bootstrap is
    paired: it resamples per-token differences (`paired` column); otherwise the two runs are
    resampled independently. Cohen's d uses the pooled standard deviation either way.
    """
    ia, ib = require_eval(con, eval_a), require_eval(con, eval_b)
    xa, xb, g, c = _measure(ia, measure), _measure(ib, measure), _group(by), _class(token_class)
    rng = np.random.default_rng(seed)
    sa, sb = _group_stats(con, eval_a, g, xa, c), _group_stats(con, eval_b, g, xb, c)
    paired = _same_tokens(con, eval_a, eval_b, ia["n_tokens"], ib["n_tokens"])
    if paired:
        boot_diff = _boot_means(_paired_hist(con, eval_a, eval_b, g, xa, xb, c), n_boot, rng)
    else:
        ba = _boot_means(_group_hist(con, eval_a, g, xa, c), n_boot, rng)
        bb = _boot_means(_group_hist(con, eval_b, g, xb, c), n_boot, rng)
        boot_diff = {k: bb[k] - ba[k] for k in ba.keys() & bb.keys()}
    m = sa.merge(sb, on="grp", suffixes=("_a", "_b"))
    m = m[(m["n_a"] >= min_count) & (m["n_b"] >= min_count) & m["grp"].isin(list(boot_diff))]
    rows = []
    for r in m.to_dict("records"):
        diff = boot_diff[r["grp"]]
        a = {"n": r["n_a"], "mean": r["mean_a"], "variance": r["variance_a"]}
        b = {"n": r["n_b"], "mean": r["mean_b"], "variance": r["variance_b"]}
        rows.append(
            {
                by: r["grp"],
                "n_a": r["n_a"],
                "n_b": r["n_b"],
                "mean_a": r["mean_a"],
                "mean_b": r["mean_b"],
                "diff": r["mean_b"] - r["mean_a"],
                "ci_low": np.percentile(diff, 2.5),
                "ci_high": np.percentile(diff, 97.5),
                "cohens_d": _cohens_d(a, b),
                "paired": paired,
            }
        )
    cols = [by, "n_a", "n_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "cohens_d", "paired"]
    return pd.DataFrame(rows, columns=cols).sort_values("diff", ignore_index=True)


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
