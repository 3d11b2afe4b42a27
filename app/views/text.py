"""Text: the evaluated text coloured by expected processing steps (Figs. 11-13), one run or
two side by side with their difference."""

import streamlit as st

from app import data, state, token_html, ui
from cyb_core import variants

f = state.current()
st.title("Text")
st.caption(
    "Each token's background shows its expected processing steps, 1 + E[pauses], from 1 to W. "
    "Hover a token for d_i, t_i, s_i, the next token and its part of speech."
)


def _gain_pair() -> tuple[str, str] | None:
    """(baseline eval, control eval) when the user asks to colour by the control's gain."""
    ev = data.evals(f.src)
    ev = ev[ev["dataset"] == f.dataset]
    bases = ev[ev["variant"] == variants.NO_PAUSES]["eval_id"].tolist()
    ctrls = ev[ev["variant"] == variants.POSITIONS_ONLY]["eval_id"].tolist()
    if not bases or not ctrls:
        return None
    on = st.toggle(
        "Next to the pauses, colour each token by a control's nll gain over a baseline",
        key="text_gain",
        help="where extra positions pay on this text: the baseline's minus the control's "
        "-log p per token (blue: the control predicts it better), beside where this run pauses",
    )
    if not on:
        return None
    c1, c2 = st.columns(2)
    base = c1.selectbox("Baseline", bases, key="text_gain_base")
    ctrl = c2.selectbox("Control", ctrls, key="text_gain_ctrl")
    return base, ctrl


with ui.problems():
    docs = data.documents(f.src, f.eval_id)
    c1, c2, c3 = st.columns([2, 2, 2])
    doc_ids = docs["doc_id"].tolist()
    doc = c1.selectbox("Document", doc_ids, index=data.first_doc(doc_ids), key="text_doc")
    colour = c2.radio(
        "Colour",
        ["input", "predicted"],
        format_func={"input": "token followed by the pauses", "predicted": "predicted token"}.get,
        key="text_colour",
        help="input: x_t, after which the pauses come; predicted: x_{t+1}, coloured by the pauses spent before it",
    )
    others = [e for e in f.labels if e != f.eval_id]
    side = c3.selectbox(
        "Side by side with",
        [None, *others],
        index=1 + others.index(f.compare[0]) if f.compare else 0,
        format_func=lambda e: "nothing (one run)" if e is None else f.label(e),
    )
    n_tokens = int(docs.loc[docs["doc_id"] == doc, "n_tokens"].iloc[0])
    c4, c5, _ = st.columns([1, 1, 4])
    size = c4.selectbox("Tokens a page", [200, 400, 800, 1600], index=1, key="text_size")
    pages = max(1, -(-n_tokens // size))
    ui.clamp("text_page", pages)
    page = c5.number_input(
        "Page", 1, pages, 1, key="text_page", help=f"{pages} pages of {size} tokens"
    )
    start = (page - 1) * size
    st.caption(f"tokens {start + 1:,}-{min(start + size, n_tokens):,} of {n_tokens:,} in {doc}")

    rows = data.doc_page(f.src, f.eval_id, doc, start, size)
    gain = _gain_pair()
    if gain is not None:
        base, ctrl = gain
        g = data.nll_gain(f.src, base, ctrl, doc, start, size)
        left, right = st.columns(2)
        left.markdown(f"**Pauses of {f.label(f.eval_id)}**")
        left.html(token_html.legend_html(f.w))
        left.html(token_html.text_html(rows, f.w, colour))
        right.markdown(f"**Where positions pay: {base.split(':')[0]} minus {ctrl.split(':')[0]}**")
        names = (variants.NO_PAUSES, variants.POSITIONS_ONLY)
        right.html(token_html.gain_legend_html(2.0, names))
        right.html(token_html.gain_html(rows, g, 2.0, names))
    elif side is None:
        st.html(token_html.legend_html(f.w))
        st.html(token_html.text_html(rows, f.w, colour))
    else:
        rows_b = data.doc_page(f.src, side, doc, start, size)
        w = max(f.w, f.ws.get(side, 1))
        both, diff = st.tabs(["Side by side", "Difference (B minus A)"])
        with both:
            st.html(token_html.legend_html(w))
            left, right = st.columns(2)
            left.markdown(f"**A: {f.label(f.eval_id)}**")
            left.html(token_html.text_html(rows, w, colour))
            right.markdown(f"**B: {f.label(side)}**")
            if rows_b.empty:
                right.info(f"{doc} was not evaluated for this run")
            else:
                right.html(token_html.text_html(rows_b, w, colour))
        with diff:
            st.html(token_html.diff_legend_html(w))
            st.html(token_html.diff_html(rows, rows_b, w, colour, ("A", "B")))
