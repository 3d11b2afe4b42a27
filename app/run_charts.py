"""Chart builders of the Runs page: perplexity per run, the frontier, perplexity against
training data and training curves (pure functions DataFrame -> plotly Figure)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from cyb_core import variants

from .charts import LAYOUT, VARIANT_COLORS, _empty


def perplexity_by_run(summary: pd.DataFrame, log_y: bool = False) -> go.Figure:
    """Perplexity of each evaluated run, coloured by variant (the paper's Fig. 4)."""
    title = "Perplexity per run (lower is better)"
    if summary.empty:
        return _empty(title, "no evaluations")
    df = summary.sort_values("ppl")
    fig = px.bar(
        df,
        x="run_id",
        y="ppl",
        color="variant",
        color_discrete_map=VARIANT_COLORS,
        hover_data=["eval_id", "w_max", "mean_expected_pauses", "n_tokens"],
        text=df["ppl"].map(lambda v: f"{v:.4g}"),
        log_y=log_y,
        title=title,
        labels={"run_id": "run", "ppl": "perplexity"},
    )
    return fig.update_layout(**LAYOUT).update_xaxes(
        categoryorder="array", categoryarray=df["run_id"]
    )


MODE_SYMBOLS = {"dense": "circle", "adaptive": "star", "shuffled": "x", "uniform": "square"}


def frontier(df: pd.DataFrame, y: str = "nll") -> go.Figure:
    """Quality against compute (analysis.runs.frontier rows): y (nll or ppl) against positions
    per real token, one small dot per evaluation (a seed), a large marker at the mean of the
    seeds of each arm and mode; colour: variant, marker: mode (circle dense, star adaptive, x
    shuffled, square uniformK); a dashed line joins an arm's uniform 0, 1, ... pauses."""
    label = {"nll": "mean nll (nats)", "ppl": "perplexity"}[y]
    title = f"Frontier: {label} against positions per real token (lower left is better)"
    if df.empty:
        return _empty(title, "no evaluations of this dataset")
    df = df.assign(kind=df["mode"].str.replace(r"\d+$", "", regex=True))
    fig = go.Figure()
    for arm, rows in df.groupby("arm", sort=True):
        color = variants.color(str(rows["variant"].iloc[0]))
        means = rows.groupby(["mode", "kind"], as_index=False).agg(
            positions=("positions", "mean"), v=(y, "mean"), seeds=("run_id", "count")
        )
        uni = means[means["kind"] == "uniform"].sort_values("positions")
        if len(uni) > 1:
            fig.add_scatter(x=uni["positions"], y=uni["v"], mode="lines", showlegend=False,
                            line=dict(color=color, dash="dash", width=1), hoverinfo="skip")  # fmt: skip
        for (mode, kind), m in rows.groupby(["mode", "kind"]):
            sym = MODE_SYMBOLS.get(kind, "circle")
            fig.add_scatter(
                x=m["positions"], y=m[y], mode="markers", showlegend=False, opacity=0.45,
                marker=dict(color=color, symbol=sym, size=6),
                text=m["run_id"] + " (" + mode + ")",
                hovertemplate="%{text}<br>positions %{x:.3f}<br>" + y + " %{y:.4f}<extra></extra>",
            )  # fmt: skip
            mean = means[means["mode"] == mode].iloc[0]
            fig.add_scatter(
                x=[mean["positions"]], y=[mean["v"]], mode="markers", name=f"{arm} {mode}",
                legendgroup=arm,
                marker=dict(color=color, symbol=sym, size=13, line=dict(width=1, color="black")),
                hovertemplate=f"{arm} {mode}: mean of {mean['seeds']} seed(s)<br>positions "
                "%{x:.3f}<br>" + y + " %{y:.4f}<extra></extra>",
            )  # fmt: skip
    fig.update_layout(title=title, legend_title_text="arm and mode (mean over seeds)", **LAYOUT)
    return fig.update_xaxes(
        title="positions per real token (1 + mean pauses in context)"
    ).update_yaxes(title=label)


def perplexity_vs_data(groups: pd.DataFrame) -> go.Figure:
    """Perplexity against real training tokens for runs that differ only in data (Fig. 6)."""
    title = "Perplexity against training data"
    if groups.empty:
        return _empty(title, "no runs that differ only in their training data")
    fig = px.line(
        groups,
        x="train_tokens",
        y="ppl",
        color="group",
        markers=True,
        hover_data=["run_id", "regime", "dataset", "mode"],
        title=title,
        labels={"train_tokens": "real training tokens", "ppl": "perplexity"},
    )
    return fig.update_layout(**LAYOUT)


def training_curves(curves: pd.DataFrame, y: str = "loss", x: str = "tokens_seen") -> go.Figure:
    title = f"Training curves: {y.replace('_', ' ')}"
    if curves.empty:
        return _empty(title, "no training logs stored")
    fig = px.line(
        curves,
        x=x,
        y=y,
        color="run_id",
        hover_data=["variant", "step"],
        title=title,
        labels={x: x.replace("_", " "), y: y.replace("_", " ")},
    )
    return fig.update_layout(**LAYOUT)
