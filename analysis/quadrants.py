"""The paper's Table 3 from per-type statistics: token types split at the median of their
median pauses and of their variance (pure pandas; analysis.queries.token_stats gives the
statistics, so the app aggregates the rows once for the table, the chart and Table 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def quadrants(stats: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Table 3 from `token_stats`: low/high median x low/high variance, `top` types each.

    Thresholds are the medians, over the types given, of the per-type median and variance
    (ties go low; a type seen once has variance 0). Within a quadrant, types are ranked by how
    far they sit into its corner: |percentile(median) - .5| + |percentile(variance) - .5|
    (SQL's percent_rank: ties share the lowest rank), then by count, then by token id.
    """
    cols = ["median_level", "variance_level", "rank", "token_id", "token", "n", "mean",
            "median", "variance", "median_threshold", "variance_threshold"]  # fmt: skip
    if stats.empty:
        return pd.DataFrame(columns=cols)
    q = stats.assign(variance=stats["variance"].fillna(0.0).astype(np.float64))
    q["median"] = q["median"].astype(np.float64)
    mt, vt = float(q["median"].median()), float(q["variance"].median())
    n = len(q)

    def pct(x: pd.Series) -> pd.Series:
        return (x.rank(method="min") - 1) / (n - 1) if n > 1 else x * 0.0

    q = q.assign(
        median_threshold=mt,
        variance_threshold=vt,
        median_level=np.where(q["median"] <= mt, "low", "high"),
        variance_level=np.where(q["variance"] <= vt, "low", "high"),
        corner=(pct(q["median"]) - 0.5).abs() + (pct(q["variance"]) - 0.5).abs(),
    )
    q = q.sort_values(
        ["median_level", "variance_level", "corner", "n", "token_id"],
        ascending=[False, False, False, False, True],
        kind="stable",
    )
    q["rank"] = q.groupby(["median_level", "variance_level"]).cumcount() + 1
    return q[q["rank"] <= top][cols].reset_index(drop=True)
