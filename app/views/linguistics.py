"""Linguistics: pause rate by part of speech, fine tag, number, subword position and
contractions, with 95% bootstrap intervals, for one run or compared across runs."""

import streamlit as st

from analysis.queries import GROUPS
from app import charts, data, state, ui

GROUP_LABELS = {
    "upos": "universal POS (UPOS)",
    "tag": "fine tag (PTB)",
    "number": "number (Plur vs Sing)",
    "word_start": "subword position",
    "contraction": "contractions (model tokens)",
}
CONTRASTS = {
    "tag": ("NN", "NNS"),
    "number": ("Sing", "Plur"),
    "word_start": ("word-initial", "continuation"),
}

f = state.current()
st.title("Linguistics")
st.caption(
    "Mean pauses after tokens of each group, 95% bootstrap intervals (tokens resampled as "
    "independent draws). Groups come from spaCy's tags of the word covering the token."
    + ui.class_note(f.token_class)
)
by = st.selectbox("Group by", list(GROUPS), format_func=GROUP_LABELS.get, key="ling_by")
with ui.problems():
    rates = data.stacked(
        data.pause_rates,
        f.src,
        f.selected,
        f.labels,
        by,
        f.measure,
        f.min_count,
        token_class=f.token_class,
    )
    ui.chart(charts.pause_rates(rates, by), "pause_rates")
    if f.compare:
        diffs = data.stacked_compare(
            f.src, f.eval_id, f.compare, f.labels, by, f.measure, f.min_count, f.token_class
        )
        ui.chart(charts.run_differences(diffs, by), "run_differences")
        ui.paginate(diffs, "ling_diffs")
    else:
        st.caption("Pick runs under 'Compare with' in the sidebar to see differences between runs.")
    ui.paginate(rates, "ling_rates")

    st.subheader("Two groups of this run")
    groups = rates.loc[rates["run"] == f.label(f.eval_id), by].astype(str).tolist()
    if len(groups) >= 2:
        a0, b0 = CONTRASTS.get(by, (groups[0], groups[-1]))
        c1, c2 = st.columns(2)
        a = c1.selectbox("Group A", groups, index=groups.index(a0) if a0 in groups else 0)
        b = c2.selectbox(
            "Group B", groups, index=groups.index(b0) if b0 in groups else len(groups) - 1
        )
        if a != b:
            st.dataframe(
                data.contrast(f.src, f.eval_id, by, a, b, f.measure, f.token_class),
                hide_index=True,
                key="contrast",
                column_config=ui.NUMBERS,
            )
    else:
        st.caption("Fewer than two groups reach the minimum count.")
