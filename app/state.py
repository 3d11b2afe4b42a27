"""The filters every page shares: dataset, mode, run (hence the evaluation), runs to compare,
measure and minimum count.

They are widgets of the entry script's sidebar, which runs before every page, so their values
persist across pages. `sidebar()` draws them and stores a `Filters` in session state; pages
read it with `current()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from . import data

MEASURES = {
    "expected": "expected pauses E[S]",
    "greedy": "greedy pauses (first d_i < 0.5)",
    "observed": "pauses taken (adaptive)",
}
KEY = "cyb_filters"


@dataclass(frozen=True)
class Filters:
    src: data.Source
    dataset: str
    mode: str
    run: str
    eval_id: str
    w: int
    compare: tuple[str, ...]  # other evaluations of the same dataset and mode
    measure: str
    min_count: int
    labels: dict = field(default_factory=dict, hash=False, compare=False)  # eval_id -> label
    ws: dict = field(default_factory=dict, hash=False, compare=False)  # eval_id -> W

    @property
    def selected(self) -> tuple[str, ...]:
        """The evaluation and the ones to compare with it."""
        return (self.eval_id, *self.compare)

    def label(self, eval_id: str) -> str:
        return self.labels.get(eval_id, eval_id)


def _keep(key: str, options: list, default=None) -> None:
    """Reset a widget's stored value when it is no longer among its options."""
    if key in st.session_state:
        v = st.session_state[key]
        ok = all(x in options for x in v) if isinstance(v, list) else v in options
        if not ok:
            st.session_state[key] = default if default is not None else options[0]


def _label(r) -> str:
    return f"{r['run_id']} ({r['variant'] or '?'}, W={r['w_max']})"


def sidebar(src: data.Source, evals: pd.DataFrame) -> Filters:
    """Draw the shared filters (evals must not be empty) and remember them for the pages."""
    sb = st.sidebar
    datasets = sorted(evals["dataset"].unique())
    _keep("f_dataset", datasets)
    dataset = sb.selectbox("Dataset", datasets, key="f_dataset", help="evaluated text")
    on_ds = evals[evals["dataset"] == dataset]
    modes = [m for m in ("dense", "adaptive") if m in set(on_ds["mode"])]
    _keep("f_mode", modes)
    mode = sb.radio(
        "Mode",
        modes,
        key="f_mode",
        horizontal=True,
        help="dense: W-1 pauses after every token (Recipe 1); adaptive: pauses the model asked for",
    )
    rows = on_ds[on_ds["mode"] == mode].sort_values("run_id")
    labels = {r["eval_id"]: _label(r) for r in rows.to_dict("records")}
    ws = {
        r["eval_id"]: int(r["w_max"]) if pd.notna(r["w_max"]) else 1
        for r in rows.to_dict("records")
    }
    runs = rows["run_id"].tolist()
    by_run = dict(zip(rows["run_id"], rows["eval_id"], strict=True))
    _keep("f_run", runs)
    run = sb.selectbox(
        "Run",
        runs,
        key="f_run",
        format_func=lambda r: labels[by_run[r]],
        help="the evaluation every page shows",
    )
    row = rows[rows["run_id"] == run].iloc[0]
    others = [r for r in runs if r != run]
    _keep("f_compare", others, default=[])
    compare = sb.multiselect(
        "Compare with",
        others,
        key="f_compare",
        format_func=lambda r: labels[by_run[r]],
        help="other runs on the same text and mode, shown next to the selected one",
    )
    measures = [m for m in MEASURES if m != "observed" or mode == "adaptive"]
    _keep("f_measure", measures)
    measure = sb.selectbox("Measure", measures, key="f_measure", format_func=MEASURES.get)
    min_count = sb.slider(
        "Minimum count",
        1,
        200,
        20,
        key="f_min_count",
        help="leave out token types and groups seen fewer times",
    )
    f = Filters(
        src=src,
        dataset=dataset,
        mode=mode,
        run=run,
        eval_id=row["eval_id"],
        w=ws[row["eval_id"]],
        compare=tuple(by_run[r] for r in compare),
        measure=measure,
        min_count=int(min_count),
        labels=labels,
        ws=ws,
    )
    sb.caption(f"Evaluation `{f.eval_id}` · {int(row['n_tokens']):,} tokens")
    st.session_state[KEY] = f
    return f


def current() -> Filters:
    return st.session_state[KEY]
