"""Data efficiency (paper Fig. 6): perplexity per data regime, and the data multiple at which a
variant reaches a target perplexity."""

from __future__ import annotations

import math

import numpy as np

from .data import REGIMES, Data


def crossing(xs, ys, target) -> float | None:
    """Smallest x at which the piecewise-linear curve (xs ascending) reaches ys <= target; None if
    never."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if ys[0] <= target:
        return float(xs[0])
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
        if y1 <= target:
            return float(x0 + (y0 - target) / (y0 - y1) * (x1 - x0))
    return None


def curve(d: Data, variant: str) -> dict[str, float]:
    """Held-out perplexity per regime, seed 0 (1x1 is the paper-variants run)."""
    pts = {}
    for regime in REGIMES:
        r = d.one("paper-variants" if regime == "1x1" else "paper-data", variant, regime)
        if r is not None and not math.isnan(r["ppl"]):
            pts[regime] = r["ppl"]
    return pts


def _one_epoch(d: Data, variant: str) -> list[tuple[int, float]]:
    pts = curve(d, variant)
    return [(x, pts[k]) for x, k in ((1, "1x1"), (2, "1x2"), (3, "1x3")) if k in pts]


def multiple(d: Data, variant: str, target: float) -> str:
    """The data multiple at which `variant` reaches `target`, interpolated between 1x1..1x3."""
    xs = _one_epoch(d, variant)
    if len(xs) < 2 or math.isnan(target):
        return "not run"
    x = crossing([a for a, _ in xs], [b for _, b in xs], target)
    if x is None:
        return f"> {xs[-1][0]}x (never reached)"
    return "≤ 1x (already at 1x)" if x == xs[0][0] else f"{x:.2f}x"


def _loglinear(d: Data, variant: str, target: float) -> float | None:
    """Where a least-squares line of perplexity against log(data) over 1x1..1x3 reaches `target`;
    None with fewer than three points, inf when the line does not fall."""
    xs = [(math.log(x), y) for x, y in _one_epoch(d, variant)]
    if len(xs) < 3:
        return None
    slope, icpt = np.polyfit([a for a, _ in xs], [b for _, b in xs], 1)
    return math.inf if slope >= 0 else math.exp((target - icpt) / slope)


def extrapolated(d: Data, variant: str, target: float) -> str:
    """Where a least-squares line of perplexity against log(data) over 1x1..1x3 reaches `target`
    (only for targets the measured curve does not reach)."""
    if not multiple(d, variant, target).startswith(">"):
        return "–"
    x = _loglinear(d, variant, target)
    if x is None:
        return "–"
    return "never (not improving)" if math.isinf(x) else f"~{x:.0f}x"


def needed(d: Data, variant: str, target: float) -> tuple[float | None, bool]:
    """The data multiple as a number, and whether it is extrapolated: measured within 1x..3x
    where the curve reaches `target`, else the log-linear line's guess (inf: never); None when
    not run."""
    xs = _one_epoch(d, variant)
    if len(xs) < 2 or math.isnan(target):
        return None, False
    x = crossing([a for a, _ in xs], [b for _, b in xs], target)
    if x is not None:
        return x, False
    return _loglinear(d, variant, target), True
