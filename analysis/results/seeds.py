"""How much a difference between two settings, paired by seed, shows.

Runs of two settings with the same seed share the initialisation and the data order, so their
difference cancels most of the seed-to-seed spread; the verdict asks whether the per-seed
differences agree in sign and how the mean compares with their standard deviation:

    shown                 >= 3 seeds, all of one sign, |mean| > 2 sd of the differences
    suggestive            all of one sign, but fewer than 3 seeds or a smaller margin
    not shown             the seeds disagree (or a difference is exactly zero)
    one seed: anecdotal   a single pair
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

SHOWN, SUGGESTIVE, NOT_SHOWN, ANECDOTAL = "shown", "suggestive", "not shown", "one seed: anecdotal"
MIN_SEEDS = 3  # fewer pairs cannot be "shown", however large the margin


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> list[float]:
    """a - b for every seed both have (NaN values left out), in seed order."""
    common = sorted(s for s in set(a) & set(b) if not (math.isnan(a[s]) or math.isnan(b[s])))
    return [float(a[s]) - float(b[s]) for s in common]


def agreeing(diffs: Sequence[float]) -> int:
    """How many differences share the sign of the majority (zeros agree with neither)."""
    neg, pos = sum(x < 0 for x in diffs), sum(x > 0 for x in diffs)
    return max(neg, pos)


def verdict(diffs: Sequence[float]) -> str | None:
    """One of SHOWN, SUGGESTIVE, NOT_SHOWN, ANECDOTAL; None without a pair."""
    n = len(diffs)
    if n == 0:
        return None
    if n == 1:
        return ANECDOTAL
    if agreeing(diffs) < n:
        return NOT_SHOWN
    if n >= MIN_SEEDS and abs(np.mean(diffs)) > 2 * np.std(diffs, ddof=1):
        return SHOWN
    return SUGGESTIVE


def describe(diffs: Sequence[float], fmt: str = ".3f") -> str:
    """'-0.120 ± 0.030, 3 of 3 seeds negative'; a single pair as its value."""
    n = len(diffs)
    if n == 0:
        return "no paired seeds"
    mean = float(np.mean(diffs))
    if n == 1:
        return f"{mean:+{fmt}}"
    sign = "negative" if mean < 0 else "positive"
    same = sum((x < 0) if mean < 0 else (x > 0) for x in diffs)  # seeds on the mean's side
    return f"{mean:+{fmt}} ± {np.std(diffs, ddof=1):{fmt}}, {same} of {n} seeds {sign}"
