"""Data access for the app: plain functions (source, parameters) -> DataFrame, cached.

Every function opens a read-only connection for its query and closes it (a reader that
stays open would block `cyb eval`). Results are cached with `st.cache_data`, keyed by the
database's path and a version read from the file's size and modification time, so a new
evaluation shows up on the next rerun. Every query is a function of analysis.queries (or
analysis.classes, analysis.store, analysis.export); this module only picks, caches and
combines them. The Playground's models are loaded once per process and shared by every session
(`model`, st.cache_resource); its scores of typed text are cached like query results (`score`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st

from analysis import classes, export, lookups, queries, store, text
from analysis import runs as runs_lib
from cyb_core import synthetic

TTL = "1h"
MAX_ENTRIES = 64
_cache = st.cache_data(ttl=TTL, max_entries=MAX_ENTRIES, show_spinner=False)


class Source(NamedTuple):
    """Where the data lives; `version` changes whenever the file does and keys the caches."""

    path: str
    version: tuple[int, int] | None  # (mtime_ns, size) of the file and its WAL; None: no file


def source(path: str | Path | None = None) -> Source:
    p = store.default_db_path(path)
    p = p.resolve()
    if not p.is_file():
        return Source(str(p), None)
    stats = [p.stat()] + [w.stat() for w in (p.with_name(p.name + ".wal"),) if w.is_file()]
    return Source(str(p), (max(s.st_mtime_ns for s in stats), sum(s.st_size for s in stats)))


def _read(src: Source, fn: Callable, *args, **kwargs):
    with store.reading_quietly(src.path) as con:
        return fn(con, *args, **kwargs)


def stacked(fn: Callable, src: Source, eval_ids, labels: dict, *args, **kwargs) -> pd.DataFrame:
    """fn(src, eval_id, *args, **kwargs) for several evaluations, one frame with a `run` column."""
    parts = [fn(src, e, *args, **kwargs).assign(run=labels.get(e, e)) for e in eval_ids]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ----------------------------------------------------------------------------- runs


@_cache
def evals(src: Source) -> pd.DataFrame:
    """Complete evaluations (analysis.lookups.list_evals); empty when there is no database."""
    if src.version is None:
        return pd.DataFrame(columns=["eval_id", "run_id", "dataset", "mode", "variant", "w_max"])
    return _read(src, lookups.list_evals)


@_cache
def run_overview(src: Source) -> pd.DataFrame:
    """run_summary joined with each run's hyperparameters (one row per evaluation)."""
    summary, rows = _read(src, lambda con: (queries.run_summary(con), queries.run_rows(con)))
    hyper = pd.DataFrame([runs_lib.hyperparameters(p) for p in rows["params"]], index=rows.index)
    rows = pd.concat([rows.drop(columns="params"), hyper], axis=1)
    return summary.merge(rows, on="run_id", how="left")


data_groups = runs_lib.data_groups  # pure: the evaluations that differ only in their data


@_cache
def frontier(src: Source, dataset: str, token_class: str | None = None) -> pd.DataFrame:
    return _read(src, queries.frontier, dataset, token_class)


@_cache
def training_curves(src: Source, run_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    return _read(src, queries.training_curves, list(run_ids) if run_ids else None)


# ----------------------------------------------------------------------------- token classes


@_cache
def eval_classes(src: Source) -> pd.DataFrame:
    """Per complete evaluation: rows per token class and pauses on answers against the rest
    (analysis.runs.eval_classes)."""
    return _read(src, queries.eval_classes)


def with_lines(src: Source, eval_ids) -> list[str]:
    """The evaluations among eval_ids whose text has synthetic lines (answer or synthetic rows)."""
    ec = eval_classes(src).set_index("eval_id")
    lines = ec["n_answer"] + ec["n_synthetic"]
    return [e for e in eval_ids if e in lines.index and lines[e] > 0]


@_cache
def class_summary(src: Source, eval_id: str) -> pd.DataFrame:
    return _read(src, classes.class_summary, eval_id)


@_cache
def class_calibration(src: Source, eval_id: str) -> pd.DataFrame:
    return _read(src, classes.class_calibration, eval_id)


def stacked_classes(src: Source, eval_ids, labels: dict) -> pd.DataFrame:
    """class_summary of several evaluations with `run` and `variant` columns."""
    variant = eval_classes(src).set_index("eval_id")["variant"]
    parts = [
        class_summary(src, e).assign(run=labels.get(e, e), variant=variant.get(e)) for e in eval_ids
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ----------------------------------------------------------------------------- text


@_cache
def documents(src: Source, eval_id: str) -> pd.DataFrame:
    """doc_id and its number of token rows."""
    return _read(src, text.documents, eval_id)


def partial_table(calib: pd.DataFrame) -> pd.DataFrame:
    """Stacked class_calibration as one row per (run, class) and a column per step holding
    the partial Spearman, rows in the order they come (answer, synthetic, natural per run)."""
    order = list(dict.fromkeys(zip(calib["run"], calib["token_class"], strict=True)))
    t = calib.set_index(["run", "token_class", "step"])["partial_spearman"].unstack("step")
    t = t.reindex(pd.MultiIndex.from_tuples(order, names=["run", "token_class"]))
    t.columns = [f"step {c}" for c in t.columns]
    return t.reset_index()


def first_doc(doc_ids: list[str]) -> int:
    """Index of the document to show first: the first synthetic one (its answers are where
    waiting should pay), else the first."""
    prefix = synthetic.SOURCE + "/"
    return next((i for i, d in enumerate(doc_ids) if str(d).startswith(prefix)), 0)


@_cache
def nll_gain(src: Source, a: str, b: str, doc_id: str, start: int, n: int) -> pd.DataFrame:
    """Per-token nll of evaluation a minus b on one page (analysis.text.nll_gain)."""
    return _read(src, text.nll_gain, a, b, doc_id, start, n)


@_cache
def doc_page(src: Source, eval_id: str, doc_id: str, start: int, n: int) -> pd.DataFrame:
    """Token rows idx in [start, start + n) of one document (analysis.text.doc_page)."""
    return _read(src, text.doc_page, eval_id, doc_id, start, n)


# ----------------------------------------------------------------------------- token types


# `token_class` (None: every row) keeps only the rows that predict a token of that class


@_cache
def token_stats(
    src: Source, eval_id: str, measure: str, min_count: int, token_class: str | None = None
) -> pd.DataFrame:
    return _read(src, queries.token_stats, eval_id, measure, min_count, token_class)


@_cache
def token_quadrants(
    src: Source,
    eval_id: str,
    measure: str,
    min_count: int,
    top: int = 10,
    token_class: str | None = None,
) -> pd.DataFrame:
    """queries.quadrants of the cached token_stats: the rows are aggregated once per page."""
    return queries.quadrants(token_stats(src, eval_id, measure, min_count, token_class), top)


@_cache
def kwic(
    src: Source, eval_id: str, token: str, limit: int = 2000, token_class: str | None = None
) -> pd.DataFrame:
    return _read(src, queries.kwic, eval_id, token=token, limit=limit, token_class=token_class)


@_cache
def token_histogram(
    src: Source,
    eval_id: str,
    token: str,
    measure: str,
    bins: int = 30,
    token_class: str | None = None,
) -> pd.DataFrame:
    """Distribution of one token type's pauses over all its contexts (lo, hi, n, fraction)."""
    return _read(
        src, queries.pause_histogram, eval_id, measure, bins, token=token, token_class=token_class
    )


# ----------------------------------------------------------------------------- groups


@_cache
def group_summary(
    src: Source, eval_id: str, by: str, measure: str, token_class: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two scans of the rows that every per-group table of one evaluation comes from."""
    return _read(src, queries.group_summary, eval_id, by, measure, token_class)


@_cache
def group_boots(
    src: Source, eval_id: str, by: str, measure: str, n_boot: int, token_class: str | None = None
) -> dict:
    return queries.group_boots(group_summary(src, eval_id, by, measure, token_class)[1], n_boot)


@_cache
def pause_rates(
    src: Source,
    eval_id: str,
    by: str,
    measure: str,
    min_count: int,
    n_boot: int = 1000,
    token_class: str | None = None,
) -> pd.DataFrame:
    stats, _ = group_summary(src, eval_id, by, measure, token_class)
    return queries.rates_of(
        stats, group_boots(src, eval_id, by, measure, n_boot, token_class), by, min_count
    )


@_cache
def compare_runs(
    src: Source,
    eval_a: str,
    eval_b: str,
    by: str,
    measure: str,
    min_count: int,
    token_class: str | None = None,
) -> pd.DataFrame:
    (sa, ha), (sb, hb) = (group_summary(src, e, by, measure, token_class) for e in (eval_a, eval_b))
    paired = _read(src, queries.paired_hist, eval_a, eval_b, by, measure, token_class)
    boots = queries.diff_boots(paired, ha, hb)
    return queries.compare_of(sa, sb, boots, by, min_count, paired is not None)


@_cache
def contrast(
    src: Source,
    eval_id: str,
    by: str,
    a: str,
    b: str,
    measure: str,
    token_class: str | None = None,
) -> pd.DataFrame:
    stats, _ = group_summary(src, eval_id, by, measure, token_class)
    boots = group_boots(src, eval_id, by, measure, 1000, token_class)
    return queries.contrast_of(stats, boots, by, a, b)


def stacked_compare(
    src: Source,
    eval_a: str,
    others,
    labels: dict,
    by: str,
    measure: str,
    min_count: int,
    token_class: str | None = None,
) -> pd.DataFrame:
    """compare_runs of eval_a against each of `others`, with a `comparison` column (B - A)."""
    parts = [
        compare_runs(src, eval_a, b, by, measure, min_count, token_class).assign(
            comparison=f"{labels.get(b, b)} - {labels.get(eval_a, eval_a)}"
        )
        for b in others
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ----------------------------------------------------------------------------- latency, calibration


@_cache
def pause_histogram(
    src: Source, eval_id: str, measure: str, bins: int = 30, token_class: str | None = None
) -> pd.DataFrame:
    return _read(src, queries.pause_histogram, eval_id, measure, bins, token_class=token_class)


@_cache
def step_distribution(src: Source, eval_id: str, token_class: str | None = None) -> pd.DataFrame:
    return _read(src, queries.step_distribution, eval_id, token_class)


@_cache
def calibration(src: Source, eval_id: str) -> pd.DataFrame:
    return _read(src, queries.calibration, eval_id)


@_cache
def calibration_density(src: Source, eval_id: str, step: int, bins: int = 40) -> pd.DataFrame:
    return _read(src, queries.calibration_density, eval_id, step, bins)


def stacked_density(src: Source, eval_ids, labels: dict, ws: dict, bins: int = 40) -> pd.DataFrame:
    """calibration_density for every step of every evaluation: run, step, d, gain, n."""
    parts = [
        calibration_density(src, e, step, bins).assign(run=labels.get(e, e), step=step)
        for e in eval_ids
        for step in range(ws.get(e, 1) - 1)
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ----------------------------------------------------------------------------- files (built on demand)


def conllu(src: Source, eval_id: str) -> str:
    return "\n".join(_read(src, export.conllu_lines, eval_id)) + "\n"


@_cache
def table3(
    src: Source,
    eval_id: str,
    fmt: str,
    measure: str,
    min_count: int,
    token_class: str | None = None,
) -> str:
    q = token_quadrants(src, eval_id, measure, min_count, 10, token_class)
    return export.table3_from(q, eval_id, fmt, measure, min_count, 10, token_class)


def raw_rows(src: Source, eval_id: str, table: str, fmt: str) -> bytes:
    """All rows of `table` for one evaluation as a CSV/Parquet file, streamed by DuckDB."""
    with tempfile.TemporaryDirectory(prefix="cyb-app-") as tmp:
        path = _read(src, export.export_rows, eval_id, tmp, None, fmt, table)
        return Path(path).read_bytes()
