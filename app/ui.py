"""Layout helpers shared by the pages: charts, paginated tables, error boxes, the empty state."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cyb_core.errors import UserError, user_message

from . import data
from .state import CLASS_LABELS

PLOT_CONFIG = {
    "displaylogo": False,
    # the camera button saves SVG in the browser: vector figures without any server-side tool
    "toImageButtonOptions": {"format": "svg", "scale": 1},
}

_G = st.column_config.NumberColumn(format="%.4g")
# significant digits for the pause statistics wherever they appear in a table
NUMBERS = {c: _G for c in ("mean", "median", "variance", "expected_pauses", "ci_low", "ci_high",
                           "diff", "mean_a", "mean_b", "cohens_d", "nll", "spearman", "pearson",
                           "partial_spearman", "mean_d", "mean_gain")}  # fmt: skip


def pauses(n) -> str:
    """A count of pauses in words: '1 pause', '0 pauses', '2 pauses'."""
    return f"{n} pause" if n == 1 else f"{n} pauses"


def class_note(token_class: str | None) -> str:
    """A caption's sentence on the sidebar's token class ('' when it keeps every row)."""
    if token_class is None:
        return ""
    return f" Only rows that predict {CLASS_LABELS[token_class]} (the sidebar's token class)."


def chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, width="stretch", key=key, config=PLOT_CONFIG)


@contextmanager
def problems(error: bool = False) -> Iterator[None]:
    """Show an error the user can fix (unknown evaluation, locked database, a checkpoint that
    cannot be loaded, ...) as a warning (with `error`, an error box) in the one line the command
    line prints too, not a trace; the rest of the block is skipped."""
    try:
        yield
    except UserError as e:
        if error:
            st.error(user_message(e), icon=":material/error:")
        else:
            st.warning(user_message(e), icon=":material/warning:")
    except duckdb.Error as e:
        st.warning(f"query failed: {str(e).splitlines()[0]}", icon=":material/warning:")


def clamp(key: str, pages: int) -> None:
    """Keep a stored page number inside 1..pages when the table or document got shorter."""
    if key in st.session_state and not 1 <= st.session_state[key] <= pages:
        st.session_state[key] = 1


def paginate(df: pd.DataFrame, key: str, rows: int = 50, **kwargs) -> pd.DataFrame:
    """Show one page of `df` with a page picker; returns the page shown."""
    n = len(df)
    pages = max(1, math.ceil(n / rows))
    if pages > 1:
        left, right = st.columns([1, 4])
        clamp(f"{key}_page", pages)
        page = left.number_input("Page", 1, pages, 1, key=f"{key}_page", help=f"{rows} rows a page")
        right.caption(f"rows {(page - 1) * rows + 1:,}-{min(page * rows, n):,} of {n:,}")
    else:
        page = 1
    part = df.iloc[(page - 1) * rows : page * rows]
    config = {**NUMBERS, **kwargs.pop("column_config", {})}
    st.dataframe(part, hide_index=True, key=f"{key}_table", column_config=config, **kwargs)
    return part


def getting_started(src: data.Source) -> None:
    """What to do when the database has no evaluation yet (instead of an error)."""
    st.title("Catch Your Breath: no evaluations yet")
    reason = (
        f"There is no database at {src.path}."
        if src.version is None
        else f"The database {src.path} holds no evaluation yet."
    )
    st.info(reason, icon=":material/info:")
    st.markdown(
        "The app reads evaluations written by `cyb eval`. Train a run (or take any checkpoint), "
        "evaluate it into this database, then reload this page:"
    )
    st.code(
        "cyb train --variant cyb-ap --w 4 --out runs/cyb-ap      # or use an existing run/checkpoint\n"
        "cyb train --variant baseline --out runs/baseline        # a second run to compare with\n"
        f"cyb eval runs/cyb-ap --split heldout --db {src.path}\n"
        f"cyb eval runs/baseline --split heldout --db {src.path}\n"
        f"cyb app --db {src.path}",
        language="bash",
    )
    st.caption(
        "Quick look without training: `cyb eval data/base --text some.txt --db ...` "
        "evaluates the pretrained base model on a text file, or open the Playground, type "
        "`data/base` as the checkpoint and paste some text."
    )
    st.button("Reload", key="reload", icon=":material/refresh:")


def unavailable(src: data.Source, problem: str) -> None:
    """The database exists but cannot be read now (a writer holds it, another schema, ...)."""
    st.title("Catch Your Breath: database unavailable")
    st.warning(problem, icon=":material/warning:")
    st.caption(
        "A `cyb eval` that is writing holds the database only while it loads its results: reload "
        "in a moment. Another schema version needs another --db."
    )
    st.button("Reload", key="reload", icon=":material/refresh:")


@st.cache_resource(show_spinner=False)
def image_export() -> str | None:
    """Why PNG/SVG files cannot be made on the server, or None when they can (plotly's
    `to_image` needs the kaleido package and a Chrome/Chromium it can start)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "PNG/SVG files need the `kaleido` package (pip install kaleido) and Chromium"
    try:
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)
    except Exception:  # an internal API of kaleido's browser driver; fall back to PATH
        found = None
    if not (
        found or any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))
    ):
        return "PNG/SVG files need Chrome or Chromium for kaleido (e.g. apt-get install chromium)"
    return None
