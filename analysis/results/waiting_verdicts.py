"""Section 10's verdict lines, computed from the per-run frame of one waiting experiment: what
pause positions in context are worth, what waiting adds, and where the models wait."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cyb_core import variants

from . import seeds
from .waiting_data import by_seed

RULE = (
    "Verdicts compare two settings paired by seed (same initialisation and data order): "
    "**shown** when at least 3 seeds agree in sign and the mean difference exceeds 2 sd of the "
    "differences (with 3 seeds that is t > 3.46, p ≈ 0.07 two-sided: a screen, not a "
    "significance test), **suggestive** when they agree with fewer seeds or a smaller margin, **not "
    "shown** when they disagree; a single seed is anecdotal."
)
MEASURES = (("answer_nll", "answer-token nll", ".3f"), ("ppl", "held-out ppl", ".1f"))
# where pause positions pay from scratch: natural text, in held-out tokens and on the validation
# slice (held back from the training split; mixed corpus: its natural half is most of the loss)
NATURAL = (("natural_nll", "natural-token nll", ".3f"), ("val_ppl", "validation ppl", ".1f"))


def best_cyb_ap(f: pd.DataFrame) -> tuple[str | None, int]:
    """Among the cyb-ap settings run with the most seeds (a claim needs them), the one with the
    lowest mean held-out perplexity; and how many settings it was picked from."""
    ap = f[(f["variant"] == "cyb-ap") & f["ppl"].notna()]
    if not len(ap):
        return None, 0
    stats = ap.groupby("name")["ppl"].agg(["mean", "size"])
    top = stats[stats["size"] == stats["size"].max()]
    return str(top["mean"].idxmin()), len(top)


def compare(f: pd.DataFrame, a: str | None, b: str | None, what: str, measures=MEASURES) -> str:
    """'**what** (a − b ...): answer-token nll <paired>: **verdict**; held-out ppl ...'."""
    if a is None or b is None or not (f["name"] == a).any() or not (f["name"] == b).any():
        return f"**{what}**: not run (needs both {a or 'a cyb-ap run'} and {b})."
    parts = []
    for col, label, spec in measures:
        diffs = seeds.paired(by_seed(f, a, col), by_seed(f, b, col))
        v = seeds.verdict(diffs)
        if v in (seeds.SHOWN, seeds.SUGGESTIVE):  # say which way
            v += f" ({a} {'better' if np.mean(diffs) < 0 else 'worse'})"
        parts.append(f"{label} {seeds.describe(diffs, spec)}: **{v}**" if v else f"{label}: –")
    return f"**{what}** ({a} − {b}; negative: {a} better): " + "; ".join(parts) + "."


def pause_ratio(f: pd.DataFrame) -> str:
    """Do the models that choose when to answer pause more on answer tokens than on natural
    ones? Per seed, E[pauses | answer] / E[pauses | natural]; the verdict is on its log."""
    parts = []
    for name, g in f[f["w"] > 1].groupby("name", sort=True):
        if variants.get(g["variant"].iloc[0]).readout != "own":  # fixed read-outs never choose
            continue
        ok = g[(g["natural_pauses"] > 0) & (g["answer_pauses"] > 0)]
        ratio = (ok["answer_pauses"] / ok["natural_pauses"]).astype(float)
        if not len(ratio):  # not evaluated yet, or never pauses on one of the two
            continue
        logs = [math.log(x) for x in ratio]
        above = int((ratio > 1).sum())
        spread = f" ± {ratio.std(ddof=1):.2f}" if len(ratio) > 1 else ""
        word = "more" if np.mean(logs) > 0 else "fewer"
        parts.append(
            f"{name} {ratio.mean():.2f}{spread} ({above} of {len(ratio)} above 1: "
            f"{word}, **{seeds.verdict(logs)}**)"
        )
    if not parts:
        return "**Pauses on answer tokens**: no run that chooses its own pauses."
    return (
        "**Pauses on answer tokens vs natural ones** (E[pauses] on answer tokens / on natural "
        "tokens, per seed; how many seeds are above 1): " + "; ".join(parts) + "."
    )


def lines(f: pd.DataFrame) -> list[str]:
    best, k = best_cyb_ap(f)
    picked = (
        f" The best cyb-ap is {best}, the lowest mean held-out ppl of the {k} cyb-ap settings with "
        "the most seeds, picked on this same evaluation (a choice that favours it)."
        if k > 1
        else ""
    )
    names = set(f["name"])
    if not ({"control", "baseline"} <= names or (best and names & {"control", "baseline"})):
        return [
            "No pair to compare: the experiment has no baseline or control next to a cyb-ap run."
        ]
    waits = f["answer_pauses"][f["name"] == best].mean() if best and "answer_pauses" in f else None
    cost = (
        f"The CYB objective's cost, not waiting's (it waits {waits:.3f} steps on answers)"
        if waits is not None and not np.isnan(waits) and waits < 0.1
        else "Waiting"
    )
    return [
        compare(f, "control", "baseline", "Pause positions in context"),
        compare(f, "control", "baseline", "Pause positions on natural text", NATURAL),
        compare(f, best, "control", cost) + picked,
        compare(f, best, "baseline", "Pauses and waiting together"),
        pause_ratio(f),
    ]
