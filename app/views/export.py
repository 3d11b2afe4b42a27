"""Export: every table (CSV, Parquet), the raw rows, CoNLL-U, Table 3 in LaTeX and each figure
as HTML or PNG/SVG. Files are built only when their button is clicked."""

import streamlit as st

from analysis.queries import GROUPS
from app import data, downloads, state, ui

MIME = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "html": "text/html",
    "png": "image/png",
    "svg": "image/svg+xml",
}

f = state.current()
st.title("Export")
st.caption(f"For evaluation `{f.eval_id}` and the sidebar's filters; files are built when clicked.")
c1, c2, c3 = st.columns(3)
opts = downloads.Options(
    by=c1.selectbox("Linguistic grouping", list(GROUPS), key="export_by"),
    token=c2.text_input("Token (context table)", "won", key="export_token").strip() or "won",
    layout=c3.radio("Several runs", ["overlay", "facet"], horizontal=True, key="export_layout"),
)


def buttons(name: str, make, formats, key: str) -> None:
    cols = st.columns([3, *([1] * len(formats)), 5 - len(formats)])
    cols[0].markdown(f"`{name}`")
    for col, fmt in zip(cols[1:], formats, strict=False):
        col.download_button(
            fmt.upper(),
            data=lambda make=make, fmt=fmt: make(fmt),
            file_name=downloads.file_name(f, name, f".{fmt}"),
            mime=MIME[fmt],
            key=f"{key}_{name}_{fmt}",
            on_click="ignore",
        )


st.subheader("Tables")
for name, table in downloads.tables(f, opts).items():
    buttons(
        name,
        lambda fmt, table=table: downloads.frame_bytes(table(), fmt),
        ["csv", "parquet"],
        "table",
    )
for name in ("tokens", "words"):
    buttons(f"raw-{name}", lambda fmt, name=name: data.raw_rows(f.src, f.eval_id, name, fmt),
            ["parquet", "csv"], "raw")  # fmt: skip

st.subheader("Text formats")
c1, c2, c3, c4 = st.columns(4)
c1.download_button(
    "CoNLL-U with pauses",
    data=lambda: data.conllu(f.src, f.eval_id),
    file_name=downloads.file_name(f, "eval", ".conllu"),
    mime="text/plain",
    key="conllu",
    on_click="ignore",
)
c2.download_button(
    "Table 3 (LaTeX)",
    data=lambda: data.table3(f.src, f.eval_id, "latex", f.measure, f.min_count, f.token_class),
    file_name=downloads.file_name(f, "table3", ".tex"),
    mime="application/x-tex",
    key="table3_latex",
    on_click="ignore",
)
c3.download_button(
    "Table 3 (Markdown)",
    data=lambda: data.table3(f.src, f.eval_id, "markdown", f.measure, f.min_count, f.token_class),
    file_name=downloads.file_name(f, "table3", ".md"),
    mime="text/markdown",
    key="table3_markdown",
    on_click="ignore",
)

with c4:
    with ui.problems():
        doc = st.selectbox(
            "Coloured text of", data.documents(f.src, f.eval_id)["doc_id"], key="export_doc"
        )
        for colour in ("input", "predicted"):
            st.download_button(
                f"Coloured text, {colour} token (HTML)",
                data=lambda colour=colour: downloads.text_page(f, doc, colour),
                file_name=downloads.file_name(f, f"text-{doc}-{colour}", ".html"),
                mime=MIME["html"],
                key=f"text_html_{colour}",
                on_click="ignore",
            )

st.subheader("Figures")
why_not = ui.image_export()
formats = ["html"] if why_not else ["html", "png", "svg"]
if why_not:
    st.caption(
        f"HTML only here: {why_not}. The camera button on every chart saves an SVG from the browser."
    )
for name, figure in downloads.figures(f, opts).items():
    buttons(
        name, lambda fmt, figure=figure: downloads.figure_bytes(figure(), fmt), formats, "figure"
    )
