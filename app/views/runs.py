"""Runs: the frontier of quality against positions per real token, every run and evaluation,
perplexity per run (Fig. 4), perplexity against training data (Fig. 6) and training curves."""

import streamlit as st

from app import data, run_charts, state, ui

f = state.current()
st.title("Runs")
st.caption(
    "Perplexity uses each model's own stopping policy (omega = 0..0:1, gamma = 1), so it is "
    "comparable across variants; mean pauses are E[S] per token."
)

TABLE = [
    "run_id", "variant", "recipe", "w_max", "hparams", "lr", "batch_size", "seq_len", "psi",
    "train_tokens", "data_tokens", "dataset", "mode", "n_tokens", "ppl", "positions", "mean_expected_pauses",
    "mean_greedy_pauses", "mean_observed_pauses", "accuracy", "run_status", "eval_id",
]  # fmt: skip

with ui.problems():
    cls = f" ({f.token_class} tokens)" if f.token_class else ""
    st.subheader(f"Frontier on {f.dataset}{cls}")
    y = st.radio("Quality", ["nll", "ppl"], horizontal=True, key="frontier_y",
                 format_func={"nll": "mean nll", "ppl": "perplexity"}.get)  # fmt: skip
    st.caption(
        "Every evaluation of this text in every mode: does a model's own placement of pauses "
        "(adaptive, star) beat the same counts shuffled within each document (x) and K pauses "
        "after every token (uniformK, squares joined by a dashed line), at the positions it "
        "spends? Small dots are seeds, large markers their mean; the sidebar's token class "
        "filter applies."
    )
    ui.chart(run_charts.frontier(data.frontier(f.src, f.dataset, f.token_class), y), "frontier")

with ui.problems():
    ec = data.eval_classes(f.src).set_index("eval_id")
    if f.eval_id in ec.index and ec.loc[f.eval_id, "n_answer"] > 0:
        row = ec.loc[f.eval_id]
        st.page_link(
            "views/classes.py",
            label=f"{f.run} waits {row['answer_pauses']:.2f} pauses before an answer of a synthetic "
            f"line, {row['other_pauses']:.2f} before other tokens: see Classes",
            icon=":material/hourglass_top:",
        )
    overview = data.run_overview(f.src)
    st.subheader("Runs and evaluations")
    ui.paginate(
        overview[TABLE],
        "runs",
        column_config={
            "ppl": st.column_config.NumberColumn("perplexity", format="%.3f"),
            "mean_expected_pauses": st.column_config.NumberColumn("mean E[S]", format="%.3f"),
            "positions": st.column_config.NumberColumn(
                "positions per token", format="%.3f", help="1 + mean pauses in context (dense: W)"
            ),
            "accuracy": st.column_config.NumberColumn(format="percent"),
        },
    )
    here = overview[(overview["dataset"] == f.dataset) & (overview["mode"] == f.mode)]
    st.subheader(f"Perplexity on {f.dataset} ({f.mode})")
    log_y = st.toggle("Logarithmic perplexity axis", key="runs_log_y")
    left, right = st.columns(2)
    with left:
        ui.chart(run_charts.perplexity_by_run(here, log_y), "ppl_by_run")
    with right:
        ui.chart(run_charts.perplexity_vs_data(data.data_groups(here)), "ppl_vs_data")

st.subheader("Training curves")
c1, c2, c3 = st.columns(3)
which = c1.radio("Runs", ["selected", "all"], horizontal=True, key="curves_runs",
                 help="the sidebar's run and the runs compared with it, or every run")  # fmt: skip
y = c2.selectbox("Curve", ["loss", "mean_expected_pauses", "lr", "elapsed_s"], key="curves_y")
x = c3.selectbox("Against", ["tokens_seen", "step", "elapsed_s"], key="curves_x")
with ui.problems():
    runs = (
        None if which == "all" else tuple(sorted({f.run, *(e.split(":", 1)[0] for e in f.compare)}))
    )
    ui.chart(run_charts.training_curves(data.training_curves(f.src, runs), y, x), "training_curves")
