"""Classes: where waiting pays. Per token class (the answer of a synthetic line, the rest of
such a line, natural text): each run's pauses, loss and gain of waiting, and whether the model
waits more where waiting helps (partial Spearman)."""

import streamlit as st

from app import charts, data, state, ui

COLUMNS = {
    "run": st.column_config.TextColumn("run"),
    "token_class": st.column_config.TextColumn("class"),
    "n": st.column_config.NumberColumn("tokens", format="%d"),
    "nll": st.column_config.NumberColumn("nll", format="%.3f"),
    "accuracy": st.column_config.NumberColumn("accuracy", format="percent"),
    "expected_pauses": st.column_config.NumberColumn("E[S]", format="%.3f"),
    "pause_rate": st.column_config.NumberColumn("pause rate", format="percent"),
    "log_gain_last": st.column_config.NumberColumn("gain of waiting", format="%.3f"),
}

f = state.current()
st.title("Classes")
st.caption(
    "Where waiting pays: a pause-trained model should wait on the answers of synthetic lines "
    "(the 432 of 47 + 385 = 432, the 2 of 'How many x in x o x? 2.'), where one more step of "
    "computation helps, and not on the rest. A row's class is that of the token it predicts."
)
with ui.problems():
    runs = data.with_lines(f.src, f.selected)
    info = data.eval_classes(f.src).set_index("eval_id")
    if f.eval_id not in runs:
        st.info(
            f"`{f.eval_id}` was stored before token classes existed; evaluate it again."
            if f.eval_id in info.index and info.loc[f.eval_id, "n_unclassed"] > 0
            else f"{f.dataset} has no synthetic lines, only natural text: nothing to compare here.",
            icon=":material/info:",
        )
    else:
        summary = data.stacked_classes(f.src, runs, f.labels)
        row = info.loc[f.eval_id]
        if row["n_answer"] > 0:  # the headline: the selected run on answer tokens
            gain = summary.loc[
                (summary["run"] == f.label(f.eval_id)) & (summary["token_class"] == "answer"),
                "log_gain_last",
            ]
            c1, c2, c3 = st.columns(3)
            c1.metric(
                "E[S] on answers",
                f"{row['answer_pauses']:.3f}",
                f"{row['answer_pauses'] - row['other_pauses']:+.3f} vs the other tokens",
                help="mean expected pauses before an answer token, and its difference from the "
                "mean over all other tokens",
            )
            c2.metric(
                "Answers with a pause", f"{row['answer_pause_rate']:.0%}", help="greedy pauses > 0"
            )
            c3.metric(
                "Gain of waiting on answers",
                "-" if gain.isna().all() else f"{gain.iloc[0]:.3f}",
                help="mean log t_{W-1} - log t_0 over answer tokens, in nats",
            )
        ui.chart(charts.class_bars(summary), "class_bars")
        st.dataframe(
            summary[list(COLUMNS)], hide_index=True, key="class_table", column_config=COLUMNS
        )
        st.caption(
            "Per run and class: tokens (rows that predict a token of the class); nll, the mean "
            "-log p of the right token under the model's own stopping; accuracy at the greedy stop; "
            "E[S], the mean expected pauses; pause rate, the share of tokens with at least one "
            "greedy pause (d_0 >= 0.5); gain of waiting, the mean log t_{W-1} - log t_0: how much "
            "more log-probability the right token gets after all W-1 pauses than at once (empty "
            "for W = 1 and adaptive evaluations). Add runs under 'Compare with' in the sidebar."
        )

        st.subheader("Does the model wait where waiting helps?")
        paused = [e for e in runs if f.ws.get(e, 1) >= 2]
        if not paused:
            st.caption("No run here has pauses (W = 1): there is no d_i to correlate.")
        else:
            calib = data.stacked(data.class_calibration, f.src, paused, f.labels)
            table = data.partial_table(calib)
            st.dataframe(
                table,
                hide_index=True,
                key="class_partial",
                column_config={
                    "token_class": "class",
                    **{c: ui.NUMBERS["spearman"] for c in table.columns if c.startswith("step")},
                },
            )
            st.caption(
                "Partial Spearman correlation of d_i (the model's 'don't know' at step i) with the "
                "gain t_{i+1} - t_i of one more step, given t_i: among tokens the model finds "
                "equally hard at step i, does it wait more where waiting helps? Positive: yes; "
                "0: its waiting ignores the gain. Empty where t_i fixes the ranks."
            )
            with st.expander("Every measure per class and step"):
                st.dataframe(
                    calib, hide_index=True, key="class_calibration", column_config=ui.NUMBERS
                )
