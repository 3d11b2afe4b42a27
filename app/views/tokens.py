"""Tokens: the paper's Table 3 (token types by median and variance of their pauses), the
quadrant chart and a search for one token across its contexts."""

import streamlit as st

from app import charts, data, state, ui

f = state.current()
st.title("Tokens")
st.caption(
    f"Token types with at least {f.min_count} occurrences (the sidebar's minimum count), keyed by "
    "the input token: the token that is followed by the pauses." + ui.class_note(f.token_class)
)

stats = None
with ui.problems():
    stats = data.token_stats(f.src, f.eval_id, f.measure, f.min_count, f.token_class)
    if stats.empty:
        st.info(
            f"No token type occurs {f.min_count} times; lower the minimum count in the sidebar."
        )
    else:
        quad = data.token_quadrants(f.src, f.eval_id, f.measure, f.min_count, 10, f.token_class)
        mt, vt = quad["median_threshold"].iloc[0], quad["variance_threshold"].iloc[0]
        left, right = st.columns([3, 2])
        with left:
            ui.chart(charts.token_quadrants(stats, mt, vt), "token_quadrants")
        with right:
            st.markdown("**Table 3**")
            st.markdown(
                data.table3(f.src, f.eval_id, "markdown", f.measure, f.min_count, f.token_class)
            )
        st.subheader(f"{len(stats):,} token types")
        ui.paginate(stats, "token_stats")

st.subheader("One token across its contexts")
typed = st.text_input(
    "Token", key="token_search", placeholder="e.g. won", help="surrounding spaces are ignored"
).strip()
with ui.problems():
    has_types = stats is not None and not stats.empty
    token = typed or (stats.nlargest(1, "variance")["token"].iloc[0] if has_types else "")
    if token:
        if not typed:
            st.caption(
                f"Showing the most variable type, {token.strip()!r}; type a token to search."
            )
        hist = data.stacked(
            data.token_histogram,
            f.src,
            f.selected,
            f.labels,
            token,
            f.measure,
            token_class=f.token_class,
        )
        ui.chart(charts.token_histogram(hist, token, f.measure), "token_histogram")
        ctx = data.kwic(f.src, f.eval_id, token, token_class=f.token_class)
        st.markdown(
            f"**Keyword in context** ({len(ctx):,} occurrences{', first 2,000' if len(ctx) == 2000 else ''})"
        )
        ui.paginate(
            ctx[["left_context", "token_text", "right_context", "expected_pauses", "greedy_pauses",
                 "pauses", "next_token", "upos", "tag", "doc_id", "idx"]],
            "kwic",
            column_config={"left_context": st.column_config.TextColumn(width="large"),
                           "right_context": st.column_config.TextColumn(width="large")},
        )  # fmt: skip
