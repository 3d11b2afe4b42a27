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
from .runs import eval_classes as eval_classes
from .runs import frontier as frontier
from .runs import run_rows as run_rows
from .runs import run_summary as run_summary
from .runs import training_curves as training_curves
from .store import StoreError, require_eval

MEASURES = {"expected": "expected_pauses", "greedy": "greedy_pauses", "observed": "pauses"}
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
BIN = 100  # histogram bins per pause for the bootstrap
# the one token-class condition of every per-token query; $cls is bound (None: all rows)
CLASS = "($cls::VARCHAR IS NULL OR token_class = $cls::VARCHAR)"


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


# ----------------------------------------------------------------------------- text


def documents(con, eval_id: str) -> pd.DataFrame:
    """The documents of one evaluation: doc_id and its number of token rows."""
    require_eval(con, eval_id)
    return con.execute(
        "SELECT doc_id, count(*) AS n_tokens FROM tokens WHERE eval_id = ? GROUP BY doc_id ORDER BY doc_id",
        [eval_id],
    ).df()


def doc_page(con, eval_id: str, doc_id: str, start: int, n: int) -> pd.DataFrame:
    """Token rows idx in [start, start + n) of one document, with the text of each token
    (`piece`, and `gap` up to the next one) and the previous row's values (`prev_*`: the
    pauses spent before predicting this token)."""
    return con.execute(
        """WITH r AS (
               SELECT t.idx, t.token_id, t.token, t.next_token, t.word, t.upos, t.tag, t.dk, t.t, t.s,
                      t.expected_pauses, t.greedy_pauses, t.pauses, t.nll, t.char_start, t.char_end,
                      lead(t.char_start) OVER (ORDER BY t.idx) AS next_start,
                      lag(t.token) OVER w AS prev_token, lag(t.dk) OVER w AS prev_dk, lag(t.t) OVER w AS prev_t,
                      lag(t.s) OVER w AS prev_s, lag(t.expected_pauses) OVER w AS prev_expected_pauses,
                      lag(t.greedy_pauses) OVER w AS prev_greedy_pauses, lag(t.pauses) OVER w AS prev_pauses,
                      lag(t.nll) OVER w AS prev_nll
               FROM tokens t
               WHERE t.eval_id = $e AND t.doc_id = $d AND t.idx >= $start - 1 AND t.idx <= $start + $n
               WINDOW w AS (ORDER BY t.idx))
           SELECT r.* EXCLUDE (next_start),
                  substr(d.text, r.char_start + 1, r.char_end - r.char_start) AS piece,
                  CASE WHEN r.next_start > r.char_end
                       THEN substr(d.text, r.char_end + 1, r.next_start - r.char_end) ELSE '' END AS gap
           FROM r JOIN docs d ON d.eval_id = $e AND d.doc_id = $d
           WHERE r.idx >= $start AND r.idx < $start + $n
           ORDER BY r.idx""",
        {"e": eval_id, "d": doc_id, "start": start, "n": n},
    ).df()


def nll_gain(con, eval_a: str, eval_b: str, doc_id: str, start: int, n: int) -> pd.DataFrame:
    """Per token idx in [start, start + n) of one document evaluated in both: nll_a, nll_b and
    gain = nll_a - nll_b (positive: B predicts it better), e.g. a baseline's minus a control's:
    where extra positions pay. Tokens are matched by position and id."""
    for e in (eval_a, eval_b):
        require_eval(con, e)
    return con.execute(
        """SELECT a.idx, a.token_id, a.nll AS nll_a, b.nll AS nll_b, a.nll - b.nll AS gain
           FROM tokens a JOIN tokens b ON b.eval_id = $b AND b.doc_id = a.doc_id
                AND b.idx = a.idx AND b.token_id = a.token_id
           WHERE a.eval_id = $a AND a.doc_id = $d AND a.idx >= $start AND a.idx < $start + $n
           ORDER BY a.idx""",
        {"a": eval_a, "b": eval_b, "d": doc_id, "start": start, "n": n},
    ).df()


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
        f"""SELECT token_id, any_value(token) AS token, count(*) AS n, avg({x}) AS mean, median({x}) AS median,
                   var_samp({x}) AS variance
            FROM tokens WHERE eval_id = $e AND {x} IS NOT NULL AND {CLASS} GROUP BY token_id HAVING count(*) >= $min
            ORDER BY n DESC, token_id""",
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
    """The paper's Table 3 as four quadrants: low/high median x low/high variance.

    Thresholds are the medians, over token types with at least `min_count` occurrences, of
    the per-type median and variance (ties go low). Within a quadrant, types are ranked by how
    far they sit into its corner: |percentile(median) - .5| + |percentile(variance) - .5|.
    """
    x = _measure(require_eval(con, eval_id), measure)
    return con.execute(
        f"""WITH st AS (
                SELECT token_id, any_value(token) AS token, count(*) AS n, avg({x}) AS mean, median({x}) AS median,
                       coalesce(var_samp({x}), 0) AS variance
                FROM tokens WHERE eval_id = $e AND {x} IS NOT NULL AND {CLASS}
                GROUP BY token_id HAVING count(*) >= $min),
            th AS (SELECT median(median) AS median_threshold, median(variance) AS variance_threshold FROM st),
            q AS (
                SELECT st.*, th.*,
                       CASE WHEN median <= median_threshold THEN 'low' ELSE 'high' END AS median_level,
                       CASE WHEN variance <= variance_threshold THEN 'low' ELSE 'high' END AS variance_level,
                       abs(percent_rank() OVER (ORDER BY median) - 0.5)
                         + abs(percent_rank() OVER (ORDER BY variance) - 0.5) AS corner
                FROM st, th)
            SELECT median_level, variance_level, row_number() OVER w AS rank, token_id, token, n, mean, median,
                   variance, median_threshold, variance_threshold
            FROM q WINDOW w AS (PARTITION BY median_level, variance_level ORDER BY corner DESC, n DESC, token_id)
            QUALIFY rank <= $top
            ORDER BY median_level DESC, variance_level DESC, rank""",
        {"e": eval_id, "min": min_count, "top": top, "cls": _class(token_class)},
    ).df()


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
        f"""SELECT t.doc_id, t.idx, t.token, t.next_token,
                  regexp_replace(substr(d.text, greatest(t.char_start - $w, 0) + 1,
                                        t.char_start - greatest(t.char_start - $w, 0)), '\\s+', ' ', 'g') AS left_context,
                  substr(d.text, t.char_start + 1, t.char_end - t.char_start) AS token_text,
                  regexp_replace(substr(d.text, t.char_end + 1, $w), '\\s+', ' ', 'g') AS right_context,
                  t.expected_pauses, t.greedy_pauses, t.pauses, t.nll, t.correct, t.word, t.upos, t.tag
           FROM tokens t JOIN docs d ON d.eval_id = t.eval_id AND d.doc_id = t.doc_id
           WHERE t.eval_id = $e AND CASE WHEN $id::INTEGER IS NOT NULL THEN t.token_id = $id::INTEGER
                                         WHEN $exact THEN t.token = $tok::VARCHAR
                                         ELSE trim(t.token) = trim($tok::VARCHAR) END AND {CLASS}
           ORDER BY t.doc_id, t.idx LIMIT $limit""",
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


def _group_hist(con, eval_id: str, g: str, x: str, cls: str | None) -> pd.DataFrame:
    return con.execute(
        f"""SELECT {g} AS grp, round({x} * {BIN}) AS bin, count(*) AS n, avg({x}) AS v
            FROM tokens WHERE eval_id = $e AND {x} IS NOT NULL AND ({g}) IS NOT NULL AND {CLASS} GROUP BY ALL""",
        {"e": eval_id, "cls": cls},
    ).df()


def _group_stats(con, eval_id: str, g: str, x: str, cls: str | None) -> pd.DataFrame:
    return con.execute(
        f"""SELECT {g} AS grp, count(*) AS n, avg({x}) AS mean, median({x}) AS median,
                   coalesce(var_samp({x}), 0) AS variance
            FROM tokens WHERE eval_id = $e AND {x} IS NOT NULL AND ({g}) IS NOT NULL AND {CLASS} GROUP BY ALL""",
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


def _paired_hist(
    con, eval_a: str, eval_b: str, g: str, xa: str, xb: str, cls: str | None
) -> pd.DataFrame:
    """Histogram of per-token differences b - a, grouped by run A's annotation (and class)."""
    return con.execute(
        f"""SELECT {g} AS grp, round(diff * {BIN}) AS bin, count(*) AS n, avg(diff) AS v
            FROM (SELECT a.*, b.{xb} - a.{xa} AS diff FROM tokens a JOIN tokens b
                    ON a.doc_id = b.doc_id AND a.idx = b.idx AND a.token_id = b.token_id
                  WHERE a.eval_id = $a AND b.eval_id = $b)
            WHERE diff IS NOT NULL AND ({g}) IS NOT NULL AND {CLASS} GROUP BY ALL""",
        {"a": eval_a, "b": eval_b, "cls": cls},
    ).df()


def _same_tokens(con, eval_a: str, eval_b: str, n_a: int, n_b: int) -> bool:
    if n_a != n_b:
        return False
    matched = con.execute(
        "SELECT count(*) FROM tokens a JOIN tokens b ON a.doc_id = b.doc_id AND a.idx = b.idx "
        "AND a.token_id = b.token_id WHERE a.eval_id = ? AND b.eval_id = ?",
        [eval_a, eval_b],
    ).fetchall()[0][0]
    return matched == n_a


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

_STEPS = """WITH v AS (SELECT i, dk[i + 1] AS x, t[i + 2] - t[i + 1] AS y
                     FROM (SELECT unnest(range(len(dk))) AS i, dk, t FROM tokens WHERE eval_id = $e)),
              f AS (SELECT * FROM v WHERE x IS NOT NULL AND y IS NOT NULL AND NOT isnan(x) AND NOT isnan(y))"""


def calibration(con, eval_id: str) -> pd.DataFrame:
    """Per step i < W-1: Spearman (and Pearson) correlation of d_i with t_{i+1} - t_i.

    Spearman is Pearson on average ranks: (rank ascending + the last tied position) / 2.
    """
    require_eval(con, eval_id)
    return con.execute(
        _STEPS
        + """,
        r AS (SELECT i, x, y,
                (rank() OVER (PARTITION BY i ORDER BY x) + count(*) OVER (PARTITION BY i) + 1
                   - rank() OVER (PARTITION BY i ORDER BY x DESC)) / 2.0 AS rx,
                (rank() OVER (PARTITION BY i ORDER BY y) + count(*) OVER (PARTITION BY i) + 1
                   - rank() OVER (PARTITION BY i ORDER BY y DESC)) / 2.0 AS ry
              FROM f)
        SELECT i AS step, count(*) AS n, corr(rx, ry) AS spearman, corr(x, y) AS pearson,
               avg(x) AS mean_d, avg(y) AS mean_gain FROM r GROUP BY i ORDER BY i""",
        {"e": eval_id},
    ).df()


def calibration_density(con, eval_id: str, step: int = 0, bins: int = 40) -> pd.DataFrame:
    """2D histogram of (d_step, t_{step+1} - t_step): d in [0, 1], gain in [-1, 1], bin centres."""
    info = require_eval(con, eval_id)
    if info["w_max"] < 2:
        raise StoreError(f"{eval_id} has no pauses (W = 1): there is no d_i to calibrate")
    if not 0 <= step < info["w_max"] - 1:
        raise StoreError(
            f"step must be in 0..{info['w_max'] - 2} for W = {info['w_max']}, got {step}"
        )
    return con.execute(
        _STEPS
        + """
        SELECT (xb + 0.5) / $b AS d, -1 + (yb + 0.5) * 2 / $b AS gain, count(*) AS n
        FROM (SELECT least(floor(x * $b), $b - 1) AS xb, least(floor((y + 1) / 2 * $b), $b - 1) AS yb
              FROM f WHERE i = $i)
        GROUP BY ALL ORDER BY 1, 2""",
        {"e": eval_id, "i": step, "b": bins},
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
                  FROM tokens WHERE eval_id = $e AND {x} IS NOT NULL
                    AND ($tok::VARCHAR IS NULL OR trim(token) = trim($tok::VARCHAR)) AND {CLASS})
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
    """Mean of s over tokens: the share of answers given after 0..W-1 pauses."""
    require_eval(con, eval_id)
    return con.execute(
        f"""SELECT i AS pauses, avg(s[i + 1]) AS mean_s
            FROM (SELECT unnest(range(len(s))) AS i, s FROM tokens WHERE eval_id = $e AND {CLASS})
            GROUP BY i ORDER BY i""",
        {"e": eval_id, "cls": _class(token_class)},
    ).df()


def token_rows(con, eval_id: str, limit: int | None = None) -> pd.DataFrame:
    """Raw token rows of one evaluation in document order."""
    require_eval(con, eval_id)
    return con.execute(
        "SELECT * FROM tokens WHERE eval_id = ? ORDER BY doc_id, idx LIMIT ?", [eval_id, limit]
    ).df()
