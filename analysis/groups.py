"""Pause rates, contrasts and run comparisons per group (part of speech, tag, number, subword
position, contraction): group statistics and compact histograms in DuckDB, bootstrap means in
numpy. Each is a query (connection in) built from pure pieces (`rates_of`, `contrast_of`,
`compare_of`) over `group_summary` and the bootstraps, so the app computes a group summary
once and derives the page's tables from it.

Bootstrap intervals resample from per-group histograms (value bins of 1 / BIN pauses, each
bin at the mean of its values, so the point estimate is exact); tokens are treated as
independent draws.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from cyb_core.names import observes_pauses

from .classes import CLASSES
from .store import StoreError, require_eval

BIN = 100  # histogram bins per pause for the bootstrap
# the one token-class condition of every per-token query; $cls is bound (None: all rows)
CLASS = "($cls::VARCHAR IS NULL OR token_class = $cls::VARCHAR)"


def _rows(g: str, rows: str = "token_rows", e: str = "$e") -> str:
    """`rows` (a relation of token_rows columns of evaluation `e`) with the kinds (`token_kind`)
    of the token and of the next token where the group expression `g` reads them (the
    contraction groups). Kinds are classified once per vocabulary entry, into a list indexed by
    token id: a lookup per row, where the regular expressions per row took 5x as long at 10M
    rows and hash joins with the vocabulary 3x. An id the vocabulary lacks has no kind (NULL)."""
    if "_kind" not in g:
        return rows
    kinds = f"""(SELECT list(v.kind ORDER BY i) AS ks
        FROM range((SELECT max(token_id) + 1 FROM vocab WHERE eval_id = {e})) ids(i)
        LEFT JOIN (SELECT token_id, {token_kind("token")} AS kind FROM vocab WHERE eval_id = {e}) v
        ON v.token_id = i)"""
    return f"""(SELECT r.*, k.ks[r.token_id + 1] AS token_kind, k.ks[r.next_id + 1] AS next_kind
                FROM {rows} r, {kinds} k)"""


def _group_hist(con, eval_id: str, g: str, x: str, cls: str | None) -> pd.DataFrame:
    return con.execute(
        f"""SELECT {g} AS grp, round({x} * {BIN})::DOUBLE AS bin, count(*) AS n, avg({x}) AS v
            FROM {_rows(g)} WHERE eval_id = $e AND {x} IS NOT NULL AND ({g}) IS NOT NULL AND {CLASS}
            GROUP BY ALL ORDER BY grp, bin""",
        {"e": eval_id, "cls": cls},
    ).df()


def _group_stats(con, eval_id: str, g: str, x: str, cls: str | None) -> pd.DataFrame:
    return con.execute(
        f"""SELECT {g} AS grp, count(*) AS n, avg({x}) AS mean, median({x}) AS median,
                   coalesce(var_samp({x}), 0) AS variance
            FROM {_rows(g)} WHERE eval_id = $e AND {x} IS NOT NULL AND ({g}) IS NOT NULL AND {CLASS}
            GROUP BY ALL ORDER BY grp""",
        {"e": eval_id, "cls": cls},
    ).df()


def _boot_means(
    hist: pd.DataFrame, n_boot: int, seed: int, stream: int = 0
) -> dict[str, np.ndarray]:
    """Bootstrap distribution of the mean per group, by multinomial resampling of its histogram.

    Each group draws from its own generator, seeded by (seed, stream, the group's name): a
    group's interval does not depend on the other groups present, and the groups run on every
    core (numpy's multinomial releases the GIL; ~40 ms per group of 300 bins).
    """

    def means(item) -> tuple[str, np.ndarray]:
        grp, h = item
        counts, values = h["n"].to_numpy(np.int64), h["v"].to_numpy(np.float64)
        rng = np.random.default_rng([seed, stream, zlib.crc32(str(grp).encode())])
        n = counts.sum()
        draws = rng.multinomial(n, counts / n, size=n_boot)  # (B, bins)
        return grp, draws @ values / n

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return dict(pool.map(means, hist.groupby("grp", sort=False)))


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
    # The positional join runs on one thread, so each side is first scanned on every thread
    # into a materialised relation of what the aggregate reads: run A's group (or the ids that
    # its token kinds are joined by after the pairing, as a hash join need not keep the rows'
    # order), whether the row is in the class (when one is asked for) and the measure, as FLOAT:
    # every measure is single precision or a small count, so that is exact, and half the bytes
    # through the join. The aggregate over the pairs runs on every thread again. UPOS at 10M
    # rows: 0.4 s, against 0.8 s with the scans inside the join.
    late, keep = "_kind" in g, cls is not None
    grp = g if late else "grp"  # run A's group, over the pairs
    return con.execute(
        f"""WITH a AS MATERIALIZED (
                SELECT {"token_id, next_id" if late else f"{g} AS grp"},
                       {f"{CLASS} AS keep, " if keep else ""}({xa})::FLOAT AS x
                FROM token_rows WHERE eval_id = $a),
            b AS MATERIALIZED (SELECT ({xb})::FLOAT AS x FROM token_rows WHERE eval_id = $b),
            p AS MATERIALIZED (SELECT a.* EXCLUDE (x), b.x::DOUBLE - a.x::DOUBLE AS diff
                               FROM a POSITIONAL JOIN b)
            SELECT {grp} AS grp, round(diff * {BIN})::DOUBLE AS bin, count(*) AS n,
                   avg(diff) AS v
            FROM {_rows(g, "p", "$a") if late else "p"}
            WHERE {"keep AND " if keep else ""}diff IS NOT NULL AND ({grp}) IS NOT NULL
            GROUP BY ALL ORDER BY grp, bin""",
        {"a": eval_a, "b": eval_b} | ({"cls": cls} if keep else {}),
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
    # model-token view of contractions: "wasn" + "'t", "they" + "'ll"; kinds from token_kind
    "contraction": """CASE
        WHEN token_kind = 't' THEN 'clitic ''t'
        WHEN token_kind = 's' THEN 'clitic ''s ''re ''ve ''ll ''d ''m'
        WHEN next_kind = 't' AND token_kind = 'n' THEN 'stem before ''t'
        WHEN next_kind = 's' AND token_kind IN ('n', 'letter') THEN 'stem before ''s ''re ''ve ''ll ''d ''m'
        ELSE 'other' END""",
}


def token_kind(token: str) -> str:
    """SQL: the kind of a decoded token (the column `token`) for the contraction groups: a
    clitic 't ('t'), another clitic ('s': 's 're 've 'll 'd 'm), else a word ending in n ('n')
    or in another letter ('letter'), else NULL."""
    return f"""CASE WHEN regexp_matches({token}, '^{_APOS}t$', 'i') THEN 't'
        WHEN regexp_matches({token}, '^{_APOS}(s|re|ve|ll|d|m)$', 'i') THEN 's'
        WHEN regexp_matches({token}, 'n$', 'i') THEN 'n'
        WHEN regexp_matches({token}, '[a-z]$', 'i') THEN 'letter' END"""


def _measure(info: dict, measure: str) -> str:
    if measure not in MEASURES:
        raise StoreError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if measure == "observed" and not observes_pauses(info["mode"]):
        raise StoreError(
            f"{info['eval_id']} is a dense evaluation: observed pauses exist only where pauses "
            "were placed per token (adaptive, shuffled, uniformK)"
        )
    if measure == "expected":
        return _expected(int(info["w_max"]))
    return MEASURES[measure]


def _expected(w: int) -> str:
    """expected_pauses as a product with a constant list: the same values as the virtual
    column, which builds range(len(s)) on every row and made a scan of 10M rows 5x slower.
    A row whose s is not W long (none is written so) falls back to the column itself."""
    steps = ", ".join(map(str, range(w)))
    return (
        f"(CASE WHEN len(s) = {w} THEN list_dot_product(s, [{steps}]::FLOAT[]) "
        "ELSE expected_pauses END)::DOUBLE"
    )


def _class(token_class: str | None) -> str | None:
    if token_class is not None and token_class not in CLASSES:
        raise StoreError(f"token class must be one of {', '.join(CLASSES)}, got {token_class!r}")
    return token_class


def _group(by: str) -> str:
    if by not in GROUPS:
        raise StoreError(f"group by one of {', '.join(GROUPS)}, got {by!r}")
    return GROUPS[by]


# ----------------------------------------------------------------------------- groups, CIs, effect sizes


def group_summary(
    con,
    eval_id: str,
    by: str,
    measure: str = "expected",
    token_class: str | None = None,
    hist: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(per-group n, mean, median, variance; per-group histogram for the bootstrap, unless
    `hist` is False) of one evaluation: what every per-group result is computed from. Stored
    for a large evaluation (analysis.large_summaries), else two scans of its rows."""
    from . import large_summaries as large  # it builds on this module

    x, g, c = _measure(require_eval(con, eval_id), measure), _group(by), _class(token_class)
    if large.stored(con, "group_stats", eval_id):
        stats, h = large.group_summary(con, eval_id, by, measure, c)
        return stats, h if hist else None
    return _group_stats(con, eval_id, g, x, c), _group_hist(con, eval_id, g, x, c) if hist else None


def group_boots(hist: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap means of every group of `group_summary`'s histogram (seeded per group)."""
    return _boot_means(hist, n_boot, seed)


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
    stats, hist = group_summary(con, eval_id, by, measure, token_class)
    return rates_of(stats, group_boots(hist, n_boot, seed), by, min_count)


def rates_of(stats: pd.DataFrame, boots: dict, by: str, min_count: int) -> pd.DataFrame:
    """`pause_rates` from `group_summary`'s statistics and `group_boots`."""
    stats = stats[stats["n"] >= min_count].sort_values("mean").reset_index(drop=True)
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
    stats, hist = group_summary(con, eval_id, by, measure, token_class)
    _has_groups(stats, by, a, b)
    return contrast_of(stats, group_boots(hist, n_boot, seed), by, a, b)


def _has_groups(stats: pd.DataFrame, by: str, *groups: str) -> None:
    for k in groups:
        if k not in set(stats["grp"]):
            known = ", ".join(map(str, stats["grp"][:20]))
            raise StoreError(f"no tokens in group {k!r} of {by}; groups: {known}")


def contrast_of(stats: pd.DataFrame, boots: dict, by: str, a: str, b: str) -> pd.DataFrame:
    """`contrast` from `group_summary`'s statistics and `group_boots`."""
    _has_groups(stats, by, a, b)
    stats = stats.set_index("grp")
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
    paired = paired_hist(con, eval_a, eval_b, by, measure, token_class)
    (sa, ha), (sb, hb) = (  # the paired bootstrap needs no histogram of either run
        group_summary(con, e, by, measure, token_class, hist=paired is None)
        for e in (eval_a, eval_b)
    )
    return compare_of(
        sa, sb, diff_boots(paired, ha, hb, n_boot, seed), by, min_count, paired is not None
    )


def paired_hist(
    con, eval_a: str, eval_b: str, by: str, measure: str, token_class: str | None = None
) -> pd.DataFrame | None:
    """Histogram of per-token differences b - a per group of run A, or None when the two
    evaluations did not score the same tokens (then they are resampled independently)."""
    ia, ib = require_eval(con, eval_a), require_eval(con, eval_b)
    xa, xb, g, c = _measure(ia, measure), _measure(ib, measure), _group(by), _class(token_class)
    if not _same_tokens(con, eval_a, eval_b, ia["n_tokens"], ib["n_tokens"]):
        return None
    return _paired_hist(con, eval_a, eval_b, g, xa, xb, c)


def diff_boots(paired, hist_a, hist_b, n_boot: int = 1000, seed: int = 0) -> dict:
    """Bootstrap differences of means per group: from the paired histogram when there is one,
    else from the two runs' histograms resampled independently (streams 1 and 2 of `seed`)."""
    if paired is not None:
        return _boot_means(paired, n_boot, seed)
    ba, bb = _boot_means(hist_a, n_boot, seed, 1), _boot_means(hist_b, n_boot, seed, 2)
    return {k: bb[k] - ba[k] for k in ba.keys() & bb.keys()}


def compare_of(
    sa: pd.DataFrame, sb: pd.DataFrame, boot_diff: dict, by: str, min_count: int, paired: bool
) -> pd.DataFrame:
    """`compare_runs` from both runs' group statistics and `diff_boots`."""
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
