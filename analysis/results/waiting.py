"""Section 10: where waiting pays. Per waiting experiment (`configs/waiting/*.toml`, run ids
`waiting-<grid>.<run>`), the measures per token class, the gain of waiting, paired verdicts, every
run and two figures; then any typed-in text evaluation. Its data are the standard tables of
`experiment.py` (waiting_runs, _evals, _classes, _calibration, _curves)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cyb_core import variants

from . import experiment, fmt, seeds
from .data import Data
from .experiment import CLASSES, order
from .figures import LAYOUT, color

NAME = "waiting"

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
        diffs = seeds.paired(experiment.by_seed(f, a, col), experiment.by_seed(f, b, col))
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


def verdict_lines(f: pd.DataFrame) -> list[str]:
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


# ----------------------------------------------------------------------------- section

FIXED = [v.name for v in variants.VARIANTS.values() if v.readout == "last"]  # d is never trained
INTRO = (
    "Each run of a `waiting-*` experiment (`configs/waiting/`) trains on the mixed corpus "
    "(`data/mixed`: natural text and synthetic lines such as `47 + 385 = 432`) and is evaluated "
    "densely; every predicted token is classed as **answer** (the result of a synthetic line), "
    "**synthetic** (the rest of such a line) or **natural**. The control trains on the same "
    "expanded input as the pause variants but is scored only at the real token's own step, so "
    "control − baseline is what pause positions in context are worth, and cyb-ap − control what "
    "waiting adds. Cells are mean ± sample sd over seeds; E[p] is the expected number of pauses. "
    f"{RULE}\n"
)


def section(d: Data) -> list[str]:
    s = ["## 10. Where waiting pays\n"]
    exps = experiment.experiments(d, NAME)
    if not exps and not len(experiment.text_evals(d, NAME)):
        return s + [
            "No waiting experiment collected yet: run `cyb experiment configs/waiting/<grid>.toml`, "
            "then `cyb results collect --waiting-only` and `render`.\n"
        ]
    s.append(INTRO)
    for exp in exps:
        s += _experiment(d, exp)
    if exps:
        s.append(
            "Held-out nll per class, one dot per seed (the dash: their mean), and validation "
            "perplexity against real tokens (mean over seeds), per experiment:\n"
        )
        s.append("![nll per class](results/fig-waiting.png)\n")
        s.append("![validation curves](results/fig-waiting-curves.png)\n")
    s += _typed_text(d)
    return s


def _experiment(d: Data, exp: str) -> list[str]:
    f = experiment.frame(d, NAME, exp)
    names = order(f["name"])
    init = ", ".join(f"`{x}`" for x in sorted(f["init"].dropna().unique())) or "–"
    tokens = ", ".join(f"{int(x):,}" for x in sorted(f["tokens"].dropna().unique())) or "–"
    ds = experiment.dataset(d, NAME, exp)
    n = [f[f"{c}_n"].dropna() for c in CLASSES]  # the same for every run: one evaluation set
    counts = " / ".join(f"{int(x.iloc[0]):,}" if len(x) else "–" for x in n)
    sizes = [float(x.iloc[0]) if len(x) else 0.0 for x in n]
    lines = (
        f"; {sizes[1] / sum(sizes):.0%} are template tokens of the synthetic lines, the words "
        "and operands around an answer, so held-out perplexity mostly measures those"
        if sum(sizes)
        else ""
    )
    s = [
        f"### `{exp}`\n",
        f"Start: {init}; {tokens} real tokens per run; held-out set `{ds or 'not evaluated'}` "
        f"({counts} answer / synthetic / natural tokens{lines}).\n",
        _measures(f, names) + "\n",
    ]
    if len(gain := _gain(f, names)):
        s.append(
            "**Gain of waiting** per class: the mean of log t_(W-1) − log t_0 (how much more "
            "log-probability the target gets at the last step than at the first), and the partial "
            "Spearman correlation of d_0 with the gain of one step given t_0 (among tokens equally "
            "hard at step 0, does the model ask to wait where waiting helps?). "
            f"{' and '.join(FIXED)} answer at the last step whatever d says and never train it, "
            "so they have no correlation; the control is left out (its later steps are never "
            "trained).\n"
        )
        s.append(gain + "\n")
    s.append("**Verdicts**, paired by seed:\n")
    s.append("\n".join(f"- {line}" for line in verdict_lines(f)) + "\n")
    s.append(_run_list(f, exp))
    return s


def _mean(g: pd.DataFrame, col: str, spec: str, scale: float = 1.0) -> str | None:
    return fmt.mean_sd(g[col] * scale, spec)


def _measures(f: pd.DataFrame, names: list[str]) -> str:
    rows = []
    for name in names:
        g = f[f["name"] == name]
        done = int(g["ppl"].notna().sum())  # seeds behind the evaluation columns
        rows.append(
            [
                name,
                done if done == len(g) else f"{done} of {len(g)} evaluated",
                _mean(g, "ppl", ".1f"),
                _mean(g, "answer_nll", ".3f"),
                _mean(g, "answer_accuracy", ".1f", 100),
                _mean(g, "synthetic_nll", ".3f"),
                _mean(g, "natural_nll", ".3f"),
            ]
            + [_mean(g, f"{c}_pauses", ".2f") for c in CLASSES]
            + [_mean(g[g["complete"]], "train_min", ".1f")]  # a partial run's time is not a cost
        )
    headers = ["run", "seeds", "held-out ppl", "answer nll", "answer acc %", "synthetic nll",
               "natural nll", "E[p] answer", "E[p] synthetic", "E[p] natural",
               "train min"]  # fmt: skip
    return fmt.table(headers, rows)


def _gain(f: pd.DataFrame, names: list[str]) -> str:
    rows = []
    for name in names:
        g = f[(f["name"] == name) & (f["w"] > 1)]
        readout = variants.get(g["variant"].iloc[0]).readout if len(g) else "first"
        # the control's steps after the first are never trained; skip runs not evaluated yet
        if readout == "first" or not g["answer_gain"].notna().any():
            continue
        partial = [_mean(g, f"{c}_partial0", ".3f") if readout == "own" else None for c in CLASSES]
        gains = [_mean(g, f"{c}_gain", ".3f") for c in CLASSES]
        rows.append([name, int(g["answer_gain"].notna().sum()), *gains, *partial])
    headers = ["run", "seeds"] + [f"log gain {c}" for c in CLASSES]
    headers += [f"partial ρ(d_0) {c}" for c in CLASSES]
    return fmt.table(headers, rows) if rows else ""


def _run_list(f: pd.DataFrame, exp: str) -> str:
    rows = [
        [
            f"`{r.run_id}`",
            r.variant,
            r.w,
            fmt.num(r.psi, "g") if r.w > 1 else None,  # psi' shapes the pause steps only
            fmt.num(r.gamma, "g"),
            "yes" if r.complete else "no",
            fmt.num(r.val_ppl, ".1f"),
            fmt.num(r.ppl, ".1f"),
            fmt.num(r.train_min, ".1f"),
        ]
        for r in f.sort_values(["name", "seed"]).itertuples()
    ]
    headers = ["run id", "variant", "W", "psi'", "gamma", "complete", "val ppl", "held-out ppl",
               "train min"]  # fmt: skip
    return (
        f"<details><summary>Every run of <code>{exp}</code> ({len(rows)})</summary>\n\n"
        + fmt.table(headers, rows)
        + "\n\n</details>\n"
    )


def _typed_text(d: Data) -> list[str]:
    t = experiment.text_evals(d, NAME)
    if not len(t):
        return []
    s = [
        "### Typed-in text\n",
        "Evaluations of a text file (`cyb eval ... --text FILE`), per class of the predicted "
        "token.\n",
    ]
    for eval_id, g in t.groupby("eval_id", sort=True):
        rows = [
            [
                r.token_class,
                f"{int(r.n):,}",
                fmt.num(r.expected_pauses, ".2f"),
                fmt.num(r.nll, ".3f"),
                fmt.num(100 * r.accuracy, ".1f"),
            ]
            for r in g.itertuples()
        ]
        s.append(f"`{eval_id}`\n")
        s.append(fmt.table(["class", "tokens", "E[pauses]", "nll", "accuracy %"], rows) + "\n")
    return s


# ----------------------------------------------------------------------------- figures

DASHES = ("solid", "dash", "dot", "dashdot", "longdash")  # run names that share a colour


def figures(d: Data) -> dict[str, go.Figure]:
    """Section 10's figures: held-out nll per token class and run (a dot per seed), and the
    validation curves; one row of panels per waiting experiment."""
    exps = experiment.experiments(d, NAME)
    return (
        {"fig-waiting.png": _nll(d, exps), "fig-waiting-curves.png": _curves(d, exps)}
        if exps
        else {}
    )


def _nll(d: Data, exps: list[str]) -> go.Figure:
    titles = [f"{exp}: {c} tokens" for exp in exps for c in CLASSES]
    fig = make_subplots(rows=len(exps), cols=len(CLASSES), subplot_titles=titles)
    for i, exp in enumerate(exps, 1):
        f = experiment.frame(d, NAME, exp)
        for j, c in enumerate(CLASSES, 1):
            for name in order(f["name"]):
                y = f[(f["name"] == name)][f"{c}_nll"].dropna()
                if not len(y):
                    continue
                # a dash for the mean: bars from zero would flatten differences of a few percent
                fig.add_scatter(
                    x=[name], y=[y.mean()], mode="markers", showlegend=False, row=i, col=j,
                    marker=dict(symbol="line-ew-open", size=28, color=color(name), line_width=2),
                )  # fmt: skip
                fig.add_scatter(
                    x=[name] * len(y), y=y, mode="markers", marker=dict(color=color(name), size=7),
                    showlegend=False, row=i, col=j,
                )  # fmt: skip
            fig.update_yaxes(title_text="nll" if j == 1 else None, row=i, col=j)
    layout = {**LAYOUT, "margin": dict(l=10, r=10, t=70, b=10)}
    return fig.update_layout(**layout, height=380 * len(exps), width=1200)


def _curves(d: Data, exps: list[str]) -> go.Figure:
    curves = experiment.table(d, NAME, "curves")
    fig = make_subplots(rows=1, cols=len(exps), subplot_titles=list(exps))
    for j, exp in enumerate(exps, 1):
        f = experiment.frame(d, NAME, exp)
        if not len(curves):
            continue
        c = curves.merge(f[["run_id", "name"]], on="run_id")
        used: dict[str, int] = {}
        for name in order(c["name"]):
            g = c[c["name"] == name].groupby("tokens_seen")["val_ppl"].mean()
            k = used[color(name)] = used.get(color(name), -1) + 1
            fig.add_scatter(
                x=g.index, y=g.values, mode="lines+markers", name=name, legendgroup=name,
                showlegend=j == 1, line=dict(color=color(name), dash=DASHES[k % len(DASHES)]),
                row=1, col=j,
            )  # fmt: skip
        fig.update_xaxes(title_text="real tokens", row=1, col=j)
        fig.update_yaxes(type="log", title_text="validation ppl" if j == 1 else None, row=1, col=j)
    return fig.update_layout(**LAYOUT, height=450, width=max(700, 550 * len(exps)))


def tables(root: Path | None, dbs: Sequence[Path] = ()) -> dict[str, pd.DataFrame]:
    """waiting_<table> from the run directories under `root` and the databases `dbs`."""
    return experiment.standard_tables(NAME, root, dbs)
