"""Latency: pauses per token and the mean distribution over 0..W-1 pauses (Figs. 7-9)."""

import streamlit as st

from app import charts, data, state, ui

f = state.current()
st.title("Latency")
st.caption(
    "Left: how many pauses each token gets (its distribution over tokens). Right: the share of "
    "answers given after 0..W-1 pauses, the mean of s_i over tokens. Add runs under "
    "'Compare with' in the sidebar." + ui.class_note(f.token_class)
)
layout = st.radio("Runs", ["overlay", "facet"], horizontal=True, key="latency_layout")
with ui.problems():
    cls = f.token_class
    hist = data.stacked(data.pause_histogram, f.src, f.selected, f.labels, f.measure, 30, cls)
    steps = data.stacked(data.step_distribution, f.src, f.selected, f.labels, cls)
    left, right = st.columns(2)
    with left:
        ui.chart(charts.pause_histogram(hist, layout, f.measure), "pause_histogram")
    with right:
        ui.chart(charts.step_distribution(steps, layout), "step_distribution")
    table = steps.pivot(index="run", columns="pauses", values="mean_s")
    table.columns = [ui.pauses(c) for c in table.columns]
    st.dataframe(table.style.format("{:.1%}"), key="latency_table")
