"""Calibration: per step i, the density of d_i against t_{i+1} - t_i with Spearman's rho
(the paper's Fig. 10)."""

import streamlit as st

from app import charts, data, state, ui

f = state.current()
st.title("Calibration")
st.caption(
    "A calibrated model says 'don't know' (d_i high) when one more pause raises the probability "
    "of the right token (t_{i+1} - t_i > 0). The paper reports Spearman 0.383, 0.157, 0.271 for "
    "steps 0-2."
)
runs = [e for e in f.selected if f.ws.get(e, 1) >= 2]
if not runs:
    st.info(
        f"{f.label(f.eval_id)} has W = 1: no pauses, no d_i to calibrate. Choose a run with pauses."
    )
else:
    c1, c2 = st.columns(2)
    bins = c1.select_slider("Bins per axis", [20, 30, 40, 60, 80], value=40, key="cal_bins")
    log = c2.toggle("Logarithmic counts", value=True, key="cal_log")
    with ui.problems():
        calib = data.stacked(data.calibration, f.src, runs, f.labels)
        density = data.stacked_density(f.src, runs, f.labels, f.ws, bins)
        ui.chart(charts.calibration_density(density, calib, bins, log), "calibration_density")
        st.dataframe(calib, hide_index=True, key="calibration_table", column_config=ui.NUMBERS)
