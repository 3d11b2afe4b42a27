"""Chart builders: pure functions DataFrame -> plotly Figure, testable without Streamlit.
They take query results as they come from analysis.queries; a `run` column, where present,
names the evaluation a row belongs to. The coloured text of the Text page is token_html.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cyb_core import variants

from .token_html import show_token

VARIANT_COLORS = {name: v.color for name, v in variants.VARIANTS.items()}
LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=50, b=10))


def _empty(title: str, note: str) -> go.Figure:
    fig = go.Figure().update_layout(title=title, **LAYOUT)
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig.update_xaxes(visible=False).update_yaxes(visible=False)


# ----------------------------------------------------------------------------- token classes

CLASS_ORDER = ["answer", "synthetic", "natural"]
PATTERNS = ["", "/", "x", ".", "\\", "+", "-", "|"]  # tells apart runs of the same variant


def class_bars(summary: pd.DataFrame) -> go.Figure:
    """Per token class, one bar per run in its variant's colour: mean expected pauses (left)
    and mean nll (right). summary: analysis.classes.class_summary rows with `run` and `variant`."""
    title = "Where the runs wait: pauses and loss per token class"
    if summary.empty:
        return _empty(title, "no token classes")
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[
            "expected pauses E[S] (higher: waits more)",
            "nll in nats (lower is better)",
        ],
        horizontal_spacing=0.08,
    )
    seen: dict[str, int] = {}
    for run, g in summary.groupby("run", sort=False):
        variant = g["variant"].iloc[0]
        k = seen[variant] = seen.get(variant, -1) + 1
        g = g.set_index("token_class").reindex(
            [c for c in CLASS_ORDER if c in set(g["token_class"])]
        )
        for col, y in ((1, "expected_pauses"), (2, "nll")):
            fig.add_trace(
                go.Bar(
                    x=g.index.tolist(),
                    y=g[y].to_numpy(float),
                    name=str(run),
                    legendgroup=str(run),
                    showlegend=col == 1,
                    marker_color=VARIANT_COLORS.get(variant, "#444444"),
                    marker_pattern_shape=PATTERNS[k % len(PATTERNS)],
                    customdata=g[["n"]].to_numpy(),
                    hovertemplate=f"{run}<br>%{{x}}: %{{y:.3f}}<br>n=%{{customdata[0]}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(categoryorder="array", categoryarray=CLASS_ORDER)
    layout = {**LAYOUT, "margin": {**LAYOUT["margin"], "t": 80}}  # room for the panel titles
    return fig.update_layout(title=title, barmode="group", height=440, **layout)


# ----------------------------------------------------------------------------- latency


def pause_histogram(
    hist: pd.DataFrame, layout: str = "overlay", measure: str = "expected", height: int = 420
) -> go.Figure:
    """Share of tokens by pauses per token, one colour per run (Figs. 7-9, left); `height`
    of the overlaid chart (the Playground's is small)."""
    title = f"Distribution of {measure} pauses per token"
    if hist.empty:
        return _empty(title, "no tokens")
    df = hist.assign(
        x=(hist["lo"] + hist["hi"]) / 2, width=(hist["hi"] - hist["lo"]).where(lambda w: w > 0, 0.8)
    )
    facet = layout == "facet" and df["run"].nunique() > 1
    fig = px.bar(
        df,
        x="x",
        y="fraction",
        color="run",
        facet_row="run" if facet else None,
        barmode="overlay",
        opacity=0.9 if facet else 0.55,
        hover_data={"lo": ":.3f", "hi": ":.3f", "n": True, "x": False},
        title=title,
        labels={"x": f"{measure} pauses", "fraction": "share of tokens"},
        height=max(360, 200 * df["run"].nunique()) if facet else height,
    )
    for trace, (_, g) in zip(fig.data, df.groupby("run", sort=False), strict=False):
        trace.width = g["width"].to_numpy()
    if facet:
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    return fig.update_layout(bargap=0, **LAYOUT)


def step_distribution(steps: pd.DataFrame, layout: str = "overlay") -> go.Figure:
    """Mean of s over tokens: answers given after 0..W-1 pauses (Figs. 7-9, right)."""
    title = "Mean distribution over pauses before the answer"
    if steps.empty:
        return _empty(title, "no tokens")
    facet = layout == "facet" and steps["run"].nunique() > 1
    fig = px.bar(
        steps,
        x="pauses",
        y="mean_s",
        color="run",
        barmode="group",
        facet_col="run" if facet else None,
        text=steps["mean_s"].map(lambda v: f"{v:.0%}"),
        title=title,
        labels={"pauses": "pauses", "mean_s": "mean s_i"},
    )
    if facet:
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    return fig.update_layout(**LAYOUT).update_xaxes(dtick=1).update_yaxes(tickformat=".0%")


# ----------------------------------------------------------------------------- token types


def token_quadrants(
    stats: pd.DataFrame, median_threshold: float, variance_threshold: float
) -> go.Figure:
    """Token types by median and variance of their pause count, split at the thresholds
    (Table 3's four quadrants)."""
    title = "Token types: median against variance of pauses"
    if stats.empty:
        return _empty(title, "no token type reaches the minimum count")
    level = lambda hi: np.where(hi, "many", "few")  # noqa: E731
    var = lambda hi: np.where(hi, "high variance", "low variance")  # noqa: E731
    df = stats.assign(
        quadrant=[
            f"{a} / {b}"
            for a, b in zip(
                level(stats["median"] > median_threshold),
                var(stats["variance"] > variance_threshold),
                strict=True,
            )
        ],
        label=stats["token"].map(show_token),
    )
    fig = px.scatter(
        df,
        x="median",
        y="variance",
        color="quadrant",
        size=np.sqrt(df["n"]),
        size_max=18,
        hover_name="label",
        hover_data={"n": True, "mean": ":.3f", "median": ":.3f", "variance": ":.4f"},
        title=title,
        labels={"median": "median pauses after the token", "variance": "variance"},
        category_orders={
            "quadrant": [
                "few / low variance",
                "few / high variance",
                "many / low variance",
                "many / high variance",
            ]
        },
    )
    fig.add_vline(x=median_threshold, line_dash="dot", line_color="#888")
    fig.add_hline(y=variance_threshold, line_dash="dot", line_color="#888")
    return fig.update_layout(**LAYOUT)


def token_histogram(hist: pd.DataFrame, token: str, measure: str = "expected") -> go.Figure:
    """One token type's pauses over all its contexts, one colour per run."""
    title = f"Pauses after {show_token(token)!r} across its contexts"
    if hist.empty:
        return _empty(title, f"{show_token(token)!r} does not occur")
    return pause_histogram(hist, "overlay", measure).update_layout(title=title)


# ----------------------------------------------------------------------------- groups


def pause_rates(rates: pd.DataFrame, by: str) -> go.Figure:
    """Mean pauses per group with 95% bootstrap intervals; grouped bars when `run` varies."""
    title = f"Mean pauses by {by} (95% bootstrap CI)"
    if rates.empty:
        return _empty(title, "no group reaches the minimum count")
    df = rates.assign(
        err_hi=rates["ci_high"] - rates["mean"],
        err_lo=rates["mean"] - rates["ci_low"],
        grp=rates[by].astype(str),
    )
    order = df.groupby("grp")["mean"].mean().sort_values().index.tolist()
    fig = px.bar(
        df,
        y="grp",
        x="mean",
        color="run" if "run" in df else None,
        barmode="group",
        orientation="h",
        error_x="err_hi",
        error_x_minus="err_lo",
        hover_data={
            "n": True,
            "ci_low": ":.3f",
            "ci_high": ":.3f",
            "err_hi": False,
            "err_lo": False,
        },
        title=title,
        labels={"grp": by, "mean": "mean pauses"},
        height=max(360, 22 * len(order) * max(1, df["run"].nunique() if "run" in df else 1) + 120),
    )
    return fig.update_layout(**LAYOUT).update_yaxes(categoryorder="array", categoryarray=order)


def run_differences(diffs: pd.DataFrame, by: str) -> go.Figure:
    """Per group, run B minus run A with the 95% CI; one colour per comparison."""
    title = f"Difference in mean pauses by {by} (B minus A, 95% CI)"
    if diffs.empty:
        return _empty(title, "no group reaches the minimum count in both runs")
    df = diffs.assign(
        err_hi=diffs["ci_high"] - diffs["diff"],
        err_lo=diffs["diff"] - diffs["ci_low"],
        grp=diffs[by].astype(str),
    )
    fig = px.scatter(
        df,
        y="grp",
        x="diff",
        color="comparison" if "comparison" in df else None,
        error_x="err_hi",
        error_x_minus="err_lo",
        hover_data={
            "n_a": True,
            "n_b": True,
            "cohens_d": ":.2f",
            "paired": True,
            "err_hi": False,
            "err_lo": False,
        },
        title=title,
        labels={"grp": by, "diff": "difference in mean pauses"},
        height=max(360, 22 * df["grp"].nunique() + 120),
    )
    fig.add_vline(x=0, line_color="#888")
    return fig.update_layout(**LAYOUT)


# ----------------------------------------------------------------------------- calibration


def calibration_density(
    density: pd.DataFrame, calib: pd.DataFrame, bins: int = 40, log: bool = True
) -> go.Figure:
    """Heatmaps of d_i against t_{i+1} - t_i, one per (run, step), Spearman in the titles (Fig. 10).

    density: run, step, d, gain, n at the centres of `bins` x `bins` cells over d in [0, 1],
    gain in [-1, 1] (analysis.queries.calibration_density); calib: run, step, spearman."""
    title = "Calibration: d_i against t_{i+1} - t_i"
    if density.empty:
        return _empty(title, "no pause steps to calibrate")
    runs, steps = list(dict.fromkeys(density["run"])), sorted(density["step"].unique())
    rho = {(r, s): v for r, s, v in calib[["run", "step", "spearman"]].itertuples(index=False)}
    fig = make_subplots(
        rows=len(runs),
        cols=len(steps),
        subplot_titles=[
            f"step {s} · Spearman {rho.get((r, s), np.nan):.3f}" for r in runs for s in steps
        ],
        shared_yaxes=True,
        horizontal_spacing=0.03,
        vertical_spacing=0.16 if len(runs) > 1 else 0.1,
    )
    centres = (np.arange(bins) + 0.5) / bins  # (bins,)
    zmax = float(np.log10(density["n"].max() + 1) if log else density["n"].max())
    for i, r in enumerate(runs, 1):
        for j, s in enumerate(steps, 1):
            g = density[(density["run"] == r) & (density["step"] == s)]
            z = np.full((bins, bins), np.nan)  # (gain, d); empty cells stay blank
            xi = np.clip(np.floor(g["d"].to_numpy() * bins), 0, bins - 1).astype(int)
            yi = np.clip(np.floor((g["gain"].to_numpy() + 1) / 2 * bins), 0, bins - 1).astype(int)
            z[yi, xi] = np.log10(g["n"].to_numpy() + 1) if log else g["n"].to_numpy()
            fig.add_trace(
                go.Heatmap(
                    x=centres,
                    y=centres * 2 - 1,
                    z=z,
                    zmin=0,
                    zmax=zmax,
                    coloraxis="coloraxis",
                    name=f"{r} step {s}",
                    hovertemplate="d=%{x:.3f}<br>gain=%{y:.3f}<br>"
                    + ("log10(n+1)" if log else "n")
                    + "=%{z:.2f}<extra></extra>",
                ),
                row=i,
                col=j,
            )
            fig.update_xaxes(title_text=f"d_{s}", range=[0, 1], row=i, col=j)
        ytitle = "t_{i+1} - t_i" if len(runs) == 1 else f"{r}<br>t_{{i+1}} - t_i"
        fig.update_yaxes(title_text=ytitle, range=[-1, 1], row=i, col=1)
    fig.update_layout(
        title=title,
        coloraxis=dict(colorscale="Viridis", colorbar=dict(title="log10(n+1)" if log else "n")),
        height=max(380, 340 * len(runs)),
        **LAYOUT,
    )
    return fig
