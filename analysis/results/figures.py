"""The document's figures (plotly); written as PNG by kaleido, which needs Chromium."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cyb_core import variants

from . import efficiency
from .data import CURVE, MAIN, VARIANTS, Data, hparam_rows, lr_sweep
from .paper import PAPER_LATENCY, PAPER_PPL

LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=50, b=10))


def color(name: str) -> str:
    # the committed figures draw the baseline dark grey rather than its chart colour (#7f7f7f);
    # changing that means re-rendering the PNGs
    return "#444" if name.startswith("baseline") else variants.color(name, "#444")


def build_figures(d: Data, out: Path | None, sections=()) -> dict[str, go.Figure]:
    """The figures by file name, `sections`' (modules with `figures(d)`) included; written as
    PNG into `out` unless None."""
    figs = {
        "fig-variants.png": _variants(d),
        "fig-hparams.png": _hparams(d),
        "fig-data.png": _data(d),
        "fig-latency.png": _latency(d),
    }
    if len(d.density):
        figs["fig-calibration.png"] = _calibration(d)
    figs["fig-lr.png"] = _lr(d)
    for section in sections:  # the experiment sections' own figures, if they have data
        figs |= section.figures(d)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in figs.items():
            fig.write_image(out / name, scale=1.5)
    return figs


def _variants(d: Data) -> go.Figure:
    """Fig. 4: perplexity per variant, ours (seeds as points) next to the paper's."""
    titles = ("ours: held-out perplexity (points: seeds)", "paper: C4 validation perplexity")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    for v in VARIANTS:
        sel = d.pick("paper-variants", v)
        if not len(sel):
            continue
        fig.add_bar(
            x=[v], y=[sel["ppl"].mean()], marker_color=color(v), showlegend=False, row=1, col=1
        )
        fig.add_scatter(
            x=[v] * len(sel),
            y=sel["ppl"],
            mode="markers",
            marker=dict(color="black", size=6),
            showlegend=False,
            row=1,
            col=1,
        )
        fig.add_bar(x=[v], y=[PAPER_PPL[v]], marker_color=color(v), showlegend=False, row=1, col=2)
    if not math.isnan(d.base_ppl):
        fig.add_hline(y=d.base_ppl, line_dash="dash", annotation_text="base model", row=1, col=1)
    fig.add_hline(y=PAPER_PPL["base"], line_dash="dash", annotation_text="pretrained", row=1, col=2)
    ppl = d.main[d.main["experiment"] == "paper-variants"]["ppl"]
    if len(d.pick("paper-variants", "baseline")):
        lo = np.nanmin([ppl.min(), d.base_ppl])
        fig.update_yaxes(range=[lo * 0.95, ppl.max() * 1.03], row=1, col=1)
    fig.update_yaxes(range=[11.0, 13.3], row=1, col=2)
    return fig.update_layout(**LAYOUT, height=420, width=1000)


def _hparams(d: Data) -> go.Figure:
    """Fig. 5: the loss-hyperparameter sweep against the baseline."""
    rows = hparam_rows(d)
    fig = go.Figure(
        go.Bar(
            x=[r["label"] for r in rows],
            y=[r["ppl"] for r in rows],
            marker_color=[color(r["variant"]) for r in rows],
        )
    )
    baseline = d.pick("paper-variants", "baseline")["ppl"]
    if len(baseline):
        fig.add_hline(
            y=baseline.mean(), line_dash="dash", annotation_text="baseline (mean of seeds)"
        )
    vals = [r["ppl"] for r in rows if r["ppl"] is not None and not math.isnan(r["ppl"])]
    if vals:
        fig.update_yaxes(range=[min(vals + list(baseline)) * 0.97, max(vals) * 1.02])
    return fig.update_layout(
        **LAYOUT,
        height=420,
        width=1000,
        yaxis_title="held-out perplexity",
        title="Loss hyperparameters (seed 0)",
    )


def _data(d: Data) -> go.Figure:
    """Fig. 6: perplexity against the data regime."""
    fig = go.Figure()
    for v in CURVE:
        pts = efficiency.curve(d, v)
        fig.add_scatter(
            x=list(pts), y=list(pts.values()), mode="lines+markers", name=v, line_color=color(v)
        )
    return fig.update_layout(
        **LAYOUT,
        height=420,
        width=800,
        xaxis_title="data regime",
        yaxis_title="held-out perplexity",
        title="Data efficiency",
    )


def _cyb_seed0(d: Data, table):
    """Rows of `table` (keyed by eval_id) from the seed-0 CYB runs of paper-variants."""
    t = table.merge(d.main[["eval_id", "name", "experiment", "seed"]], on="eval_id")
    return t[
        (t["experiment"] == "paper-variants") & (t["seed"] == 0) & t["name"].str.startswith("cyb")
    ]


def _latency(d: Data) -> go.Figure:
    """Figs. 7-9: the halting distribution and the spread of expected pauses."""
    titles = ("share of answers after k pauses (mean s_k)", "expected pauses per token")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    for name, g in _cyb_seed0(d, d.steps).groupby("name"):
        fig.add_bar(x=g["pauses"], y=g["mean_s"], name=name, marker_color=color(name), row=1, col=1)
    fig.add_bar(
        x=list(range(4)),
        y=list(PAPER_LATENCY),
        name="paper cyb-ap",
        marker_color="#bbbbbb",
        row=1,
        col=1,
    )
    for name, g in _cyb_seed0(d, d.hist).groupby("name"):
        fig.add_scatter(
            x=(g["lo"] + g["hi"]) / 2,
            y=g["fraction"],
            mode="lines",
            name=f"{name} (hist)",
            line_color=color(name),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="pauses", row=1, col=1)
    fig.update_xaxes(title_text="E[pauses]", row=1, col=2)
    return fig.update_layout(**LAYOUT, height=420, width=1100, barmode="group")


def _calibration(d: Data) -> go.Figure:
    """Fig. 10: density of (d_i, gain of waiting) per step, in the main cyb-ap run."""
    steps = sorted(d.density["step"].unique())
    cal = d.calibration[d.calibration["eval_id"] == d.density["eval_id"].iloc[0]]
    sp = cal.set_index("step")["spearman"]
    titles = [f"step {s}: Spearman {sp.get(s, float('nan')):.3f}" for s in steps]
    fig = make_subplots(rows=1, cols=len(steps), subplot_titles=titles)
    for i, s in enumerate(steps, 1):
        g = d.density[d.density["step"] == s]
        fig.add_heatmap(
            x=g["d"],
            y=g["gain"],
            z=np.log10(g["n"]),
            colorscale="Viridis",
            showscale=i == 1,
            colorbar=dict(title="log10 tokens"),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text=f"d_{s}", range=[0, 1], row=1, col=i)
        fig.update_yaxes(
            title_text=f"t_{s + 1} - t_{s}" if i == 1 else None, range=[-1, 1], row=1, col=i
        )
    layout = {**LAYOUT, "margin": dict(l=10, r=10, t=90, b=10)}  # room for the subplot titles
    return fig.update_layout(**layout, height=420, width=1100, title=f"Calibration: {MAIN}")


def _lr(d: Data) -> go.Figure:
    """The learning-rate sweep: validation perplexity per peak rate and family."""
    fig = go.Figure()
    for fam, g in lr_sweep(d).sort_values("lr").groupby("family"):
        fig.add_scatter(
            x=g["lr"], y=g["val_ppl"], mode="lines+markers", name=fam, line_color=color(fam)
        )
    return fig.update_layout(
        **LAYOUT,
        height=380,
        width=700,
        xaxis_type="log",
        xaxis_title="peak learning rate",
        yaxis_title="validation perplexity",
        title="Learning-rate sweep (validation slice of the fine-tuning split)",
    )
