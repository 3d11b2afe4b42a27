"""Entry script of the app: `cyb app`, or `streamlit run app/main.py` with CYB_DB set.

Builds the navigation and the shared sidebar filters (drawn here, before every page, so they
persist across pages); the pages in app/views/ hold layout only. The folder is not called
pages/: Streamlit treats a pages/ folder next to the entry script as a legacy multipage app,
and a fresh session opened on a page's URL would then run that page without this script
(no sidebar, no filters).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` without an installed package
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from analysis.store import StoreError  # noqa: E402
from app import data, state, ui  # noqa: E402

PAGES = [
    ("views/runs.py", "Runs", ":material/leaderboard:"),
    ("views/classes.py", "Classes", ":material/hourglass_top:"),
    ("views/text.py", "Text", ":material/article:"),
    ("views/latency.py", "Latency", ":material/timer:"),
    ("views/tokens.py", "Tokens", ":material/token:"),
    ("views/linguistics.py", "Linguistics", ":material/translate:"),
    ("views/calibration.py", "Calibration", ":material/scatter_plot:"),
    ("views/playground.py", "Playground", ":material/edit_note:"),
    ("views/export.py", "Export", ":material/download:"),
]

st.set_page_config(page_title="CYB analysis", page_icon=":material/air:", layout="wide")
src = data.source()
problem = None
try:
    evals = data.evals(src)
except StoreError as e:  # locked by a writer for too long, another schema version, ...
    evals, problem = None, str(e)


def getting_started() -> None:
    ui.getting_started(src)


def unavailable() -> None:
    ui.unavailable(src, problem)


if problem:
    st.navigation([st.Page(unavailable, title="Database unavailable")]).run()
elif evals.empty:  # nothing to browse yet; the Playground needs only a checkpoint
    st.session_state.pop(state.KEY, None)  # filters of a database seen before
    playground = next(p for p in PAGES if p[0] == "views/playground.py")
    st.navigation(
        [
            st.Page(getting_started, title="Getting started"),
            st.Page(playground[0], title=playground[1], icon=playground[2]),
        ]
    ).run()
else:
    page = st.navigation(
        [
            st.Page(path, title=title, icon=icon, default=i == 0)
            for i, (path, title, icon) in enumerate(PAGES)
        ]
    )
    st.sidebar.header("Filters")
    state.sidebar(src, evals)
    page.run()
