"""The files of the Export page's download buttons: every table and figure of the pages for the
current filters as zero-argument callables, so nothing is computed until its button is clicked,
and the bytes of each file format."""

from __future__ import annotations

import html
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from analysis.export import export_frame, safe_name

from . import charts, data, run_charts, token_html
from .state import Filters


@dataclass(frozen=True)
class Options:
    """Settings of the pages that are not shared filters."""

    by: str = "upos"
    token: str = "won"
    layout: str = "overlay"
    bins: int = 40


def tables(f: Filters, o: Options) -> dict[str, Callable[[], pd.DataFrame]]:
    """The Export page's tables, under the sidebar's filters (token class included)."""
    s, e, sel, lab, cls = f.src, f.eval_id, f.selected, f.labels, f.token_class
    runs = [x for x in sel if f.ws.get(x, 1) >= 2]
    out = {
        "runs": lambda: data.run_overview(s),
        "training-curves": lambda: data.training_curves(s, None),
        "token-stats": lambda: data.token_stats(s, e, f.measure, f.min_count, cls),
        "table3-quadrants": lambda: data.token_quadrants(
            s, e, f.measure, f.min_count, token_class=cls
        ),
        f"kwic-{o.token}": lambda: data.kwic(s, e, o.token, token_class=cls),
        f"token-histogram-{o.token}": lambda: data.stacked(
            data.token_histogram, s, sel, lab, o.token, f.measure, token_class=cls
        ),
        f"pause-rates-{o.by}": lambda: data.stacked(
            data.pause_rates, s, sel, lab, o.by, f.measure, f.min_count, token_class=cls
        ),
        "pause-histogram": lambda: data.stacked(
            data.pause_histogram, s, sel, lab, f.measure, token_class=cls
        ),
        "step-distribution": lambda: data.stacked(
            data.step_distribution, s, sel, lab, token_class=cls
        ),
        "calibration": lambda: data.stacked(data.calibration, s, runs, lab),
        "calibration-density": lambda: data.stacked_density(s, runs, lab, f.ws, o.bins),
    }
    if f.compare:
        out[f"compare-{o.by}"] = lambda: data.stacked_compare(
            s, e, f.compare, lab, o.by, f.measure, f.min_count, cls
        )
    return out


def _quadrants(f: Filters) -> go.Figure:
    stats = data.token_stats(f.src, f.eval_id, f.measure, f.min_count)
    if stats.empty:
        return charts.token_quadrants(stats, 0.0, 0.0)
    q = data.token_quadrants(f.src, f.eval_id, f.measure, f.min_count)
    return charts.token_quadrants(
        stats, q["median_threshold"].iloc[0], q["variance_threshold"].iloc[0]
    )


def _here(f: Filters) -> pd.DataFrame:
    ov = data.run_overview(f.src)
    return ov[(ov["dataset"] == f.dataset) & (ov["mode"] == f.mode)]


def figures(f: Filters, o: Options) -> dict[str, Callable[[], go.Figure]]:
    t = tables(f, o)
    out = {
        "perplexity-by-run": lambda: run_charts.perplexity_by_run(_here(f)),
        "perplexity-vs-data": lambda: run_charts.perplexity_vs_data(data.data_groups(_here(f))),
        "training-curves": lambda: run_charts.training_curves(t["training-curves"]()),
        "pause-histogram": lambda: charts.pause_histogram(
            t["pause-histogram"](), o.layout, f.measure
        ),
        "step-distribution": lambda: charts.step_distribution(t["step-distribution"](), o.layout),
        "token-quadrants": lambda: _quadrants(f),
        f"token-histogram-{o.token}": lambda: charts.token_histogram(
            t[f"token-histogram-{o.token}"](), o.token, f.measure
        ),
        f"pause-rates-{o.by}": lambda: charts.pause_rates(t[f"pause-rates-{o.by}"](), o.by),
        "calibration-density": lambda: charts.calibration_density(
            t["calibration-density"](), t["calibration"](), o.bins
        ),
    }
    if f.compare:
        out[f"compare-{o.by}"] = lambda: charts.run_differences(t[f"compare-{o.by}"](), o.by)
    return out


TEXT_TOKENS = 5000  # tokens of a document in the coloured-text file


def text_page(f: Filters, doc: str, colour: str = "input") -> bytes:
    """The first TEXT_TOKENS tokens of a document coloured by processing steps, as a
    standalone HTML page (hover titles included), the Text page's view for a paper's figure."""
    rows = data.doc_page(f.src, f.eval_id, doc, 0, TEXT_TOKENS)
    body = token_html.legend_html(f.w) + token_html.text_html(rows, f.w, colour)
    title = html.escape(f"{f.eval_id} · {doc} · colour: {colour} token")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
        f'<body style="max-width:60rem;margin:2rem auto"><h3>{title}</h3>{body}</body></html>'
    ).encode()


def file_name(f: Filters, name: str, suffix: str) -> str:
    return f"{safe_name(name)}-{safe_name(f.eval_id)}{suffix}"


def figure_bytes(fig: go.Figure, fmt: str) -> bytes:
    """html: a self-contained page (plotly.js inlined, works offline); png/svg: via kaleido."""
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode()
    height = fig.layout.height or 500
    return pio.to_image(fig, format=fmt, width=1100, height=height, scale=2 if fmt == "png" else 1)


def frame_bytes(df: pd.DataFrame, fmt: str) -> bytes:
    """A table as CSV or Parquet bytes (via analysis.export, so files match `cyb export`)."""
    with tempfile.TemporaryDirectory(prefix="cyb-app-") as tmp:
        return export_frame(df, tmp, "table", fmt).read_bytes()
