"""The filters every page shares: dataset, mode, run (hence the evaluation), runs to compare,
token class, measure and minimum count.

They are widgets of the entry script's sidebar, which runs before every page, so their values
persist across pages. `sidebar()` draws them and stores a `Filters` in session state; pages
read it with `current()`. A session's first run points them at `opening()`: the evaluation
that best shows where waiting pays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd
import streamlit as st

from analysis.classes import CLASSES
from analysis.store import StoreError
from cyb_core import variants
from cyb_core.names import EVAL_MODES, observes_pauses, parse_mode

from . import data

MEASURES = {
    "expected": "expected pauses E[S]",
    "greedy": "greedy pauses (first d_i < 0.5)",
    "observed": "pauses taken (adaptive)",
}
CLASS_LABELS = {
    "all": "all tokens",
    "answer": "answers of synthetic lines",
    "synthetic": "the rest of synthetic lines",
    "natural": "natural text",
}
KEY = "cyb_filters"
OPENED = "cyb_opened"
# variants whose model does not choose its pauses (no pauses, always the last or the first step)
NO_CHOICE = {n for n, v in variants.VARIANTS.items() if v.readout != "own" or v.fixed_w == 1}


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
    token_class: str | None = None  # rows predicting a token of this class; None: all rows
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


class Opening(NamedTuple):
    """Where a new session starts; None fields keep the sidebar's plain default."""

    dataset: str
    mode: str | None = None
    run: str | None = None


def opening(classes: pd.DataFrame) -> Opening | None:
    """The evaluation to open on, from analysis.runs.eval_classes: on a dataset with answer
    tokens, the evaluation of a model that chooses its own pauses (W > 1, not baseline,
    control or TBYS) that pauses most on answers compared with the rest of the text (mean
    expected pauses; ties: the higher answer pause rate, then the eval id). Only the dataset
    when no such model was evaluated there; None when no dataset has answer tokens."""
    answers = classes[classes["n_answer"] > 0]
    if answers.empty:
        return None
    own = answers[(answers["w_max"] > 1) & ~answers["variant"].isin(NO_CHOICE)]
    own = own.dropna(subset=["answer_pauses", "other_pauses"])
    if own.empty:
        return Opening(sorted(answers["dataset"])[0])
    best = (
        own.assign(gap=own["answer_pauses"] - own["other_pauses"])
        .sort_values(["gap", "answer_pause_rate", "eval_id"], ascending=[False, False, True])
        .iloc[0]
    )
    return Opening(best["dataset"], best["mode"], best["run_id"])


def _open(src: data.Source) -> None:
    """On a session's first run, preset the filters to `opening()` (a user's later choices win)."""
    if st.session_state.get(OPENED):
        return
    st.session_state[OPENED] = True
    try:
        start = opening(data.eval_classes(src))
    except StoreError:  # the plain default is still a good start
        return
    if start is not None:
        for key, value in zip(("f_dataset", "f_mode", "f_run"), start, strict=True):
            if value is not None:
                st.session_state.setdefault(key, value)


def _class_filter(src: data.Source, eval_id: str) -> str | None:
    """The token-class widget, only where the evaluation has more than one class to choose."""
    ec = data.eval_classes(src).set_index("eval_id")
    counts = ec.loc[eval_id] if eval_id in ec.index else None
    present = [c for c in CLASSES if counts is not None and counts[f"n_{c}"] > 0]
    if len(present) < 2:  # natural text only, or stored before token classes existed
        return None
    options = ["all", *present]
    _keep("f_class", options)
    chosen = st.sidebar.selectbox(
        "Token class",
        options,
        key="f_class",
        format_func=CLASS_LABELS.get,
        help="Tokens, Latency and Linguistics count only the rows that predict a token of this "
        "class: the answer of a synthetic line such as 47 + 385 = 432, the rest of such a line, "
        "or natural text",
    )
    return None if chosen == "all" else chosen


def _mode_order(name: str) -> tuple[int, int]:
    """dense, adaptive, shuffled, then uniform0, uniform1, ..."""
    mode, k = parse_mode(name)
    return EVAL_MODES.index(mode), k or 0


def sidebar(src: data.Source, evals: pd.DataFrame) -> Filters:
    """Draw the shared filters (evals must not be empty) and remember them for the pages."""
    sb = st.sidebar
    _open(src)
    datasets = sorted(evals["dataset"].unique())
    _keep("f_dataset", datasets)
    dataset = sb.selectbox("Dataset", datasets, key="f_dataset", help="evaluated text")
    on_ds = evals[evals["dataset"] == dataset]
    modes = sorted(set(on_ds["mode"]), key=_mode_order)
    _keep("f_mode", modes)
    mode = sb.radio(
        "Mode",
        modes,
        key="f_mode",
        horizontal=True,
        help="dense: W-1 pauses after every token (Recipe 1); adaptive: pauses the model asked "
        "for; shuffled: those counts permuted within each document; uniformK: K pauses after "
        "every token",
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
    token_class = _class_filter(src, row["eval_id"])
    measures = [m for m in MEASURES if m != "observed" or observes_pauses(mode)]
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
        token_class=token_class,
        labels=labels,
        ws=ws,
    )
    sb.caption(f"Evaluation `{f.eval_id}` · {int(row['n_tokens']):,} tokens")
    st.session_state[KEY] = f
    return f


def current() -> Filters:
    return st.session_state[KEY]


def current_or_none() -> Filters | None:
    """The filters, or None where the sidebar has none (a database without evaluations)."""
    return st.session_state.get(KEY)
