"""Section 10's figures: held-out nll per token class and run (a dot per seed), and the
validation curves; one row of panels per waiting experiment."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import Data
from .figures import LAYOUT, color
from .waiting_data import CLASSES, experiments, frame, order, table

DASHES = ("solid", "dash", "dot", "dashdot", "longdash")  # run names that share a colour


def build(d: Data) -> dict[str, go.Figure]:
    exps = experiments(d)
    return (
        {"fig-waiting.png": _nll(d, exps), "fig-waiting-curves.png": _curves(d, exps)}
        if exps
        else {}
    )


def _nll(d: Data, exps: list[str]) -> go.Figure:
    titles = [f"{exp}: {c} tokens" for exp in exps for c in CLASSES]
    fig = make_subplots(rows=len(exps), cols=len(CLASSES), subplot_titles=titles)
    for i, exp in enumerate(exps, 1):
        f = frame(d, exp)
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
    curves = table(d, "curves")
    fig = make_subplots(rows=1, cols=len(exps), subplot_titles=list(exps))
    for j, exp in enumerate(exps, 1):
        f = frame(d, exp)
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
