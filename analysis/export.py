"""Exports: CSV/Parquet of query results and raw rows, CoNLL-U with pause data, Table 3.

Every file goes into the directory the user names: `name` must be a plain file name and the
resolved path must stay inside that directory. Files are written to a temporary name and
renamed, so an interrupted export never leaves a truncated file under the final name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from cyb_core.atomic import atomic_write
from cyb_core.names import observes_pauses

from . import pos, queries
from .store import StoreError, require_eval

TABLE_FORMATS = ("csv", "parquet")
TABLE3_FORMATS = ("markdown", "latex")
SUFFIX = {
    "csv": ".csv",
    "parquet": ".parquet",
    "conllu": ".conllu",
    "markdown": ".md",
    "latex": ".tex",
}
ROW_TABLES = ("tokens", "words")  # raw rows that can be exported (constants used as identifiers)
_VECTOR_COLS = {"tokens": ("dk", "t", "s"), "words": ()}


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "export"


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise StoreError(
            f"export name {name!r} must be a plain file name inside the output directory"
        )


def safe_path(out_dir: str | Path, name: str) -> Path:
    """out_dir/name, refusing names that leave out_dir (separators, '..', links pointing out)."""
    _check_name(name)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise StoreError(f"export directory {root} is a file")
    root.mkdir(parents=True, exist_ok=True)
    path = (root / name).resolve()
    if path.parent != root.resolve():
        raise StoreError(f"export path {root / name} resolves outside {root}")
    return path


def check_out_dir(out_dir: str | Path) -> None:
    """Refuse, before any query runs, an output directory that is a file or cannot be written."""
    from .store import check_writable_dir

    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise StoreError(f"export directory {root} is a file; give a directory with --out")
    check_writable_dir(root, f"export folder {root}")


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise StoreError(f"format must be one of {', '.join(allowed)} here, got {fmt!r}")


def export_frame(df: pd.DataFrame, out_dir: str | Path, name: str, fmt: str = "csv") -> Path:
    """A query result as CSV or Parquet; `name` gets the format's suffix if it lacks it."""
    _check_format(fmt, TABLE_FORMATS)
    _check_name(name)
    path = safe_path(out_dir, name if name.endswith(SUFFIX[fmt]) else name + SUFFIX[fmt])
    if fmt == "csv":
        return atomic_write(path, lambda p: df.to_csv(p, index=False))
    return atomic_write(path, lambda p: df.to_parquet(p, index=False))


def export_rows(
    con,
    eval_id: str,
    out_dir: str | Path,
    name: str | None = None,
    fmt: str = "parquet",
    table: str = "tokens",
    batch_rows: int = 100_000,
) -> Path:
    """Raw rows of one evaluation, streamed (memory stays bounded for millions of rows).
    CSV writes the vector columns dk, t, s as text like [0.91, 0.4]."""
    _check_format(fmt, TABLE_FORMATS)
    if table not in ROW_TABLES:
        raise StoreError(f"table must be one of {', '.join(ROW_TABLES)}, got {table!r}")
    require_eval(con, eval_id)
    path = safe_path(out_dir, name or f"{table}-{safe_name(eval_id)}{SUFFIX[fmt]}")
    cast = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" for c in _VECTOR_COLS[table])
    select = f"SELECT * REPLACE ({cast})" if fmt == "csv" and cast else "SELECT *"
    order = "doc_id, idx" if table == "tokens" else "doc_id, widx"

    def write(p: Path):
        reader = con.sql(
            f"{select} FROM {table} WHERE eval_id = ? ORDER BY {order}", params=[eval_id]
        ).to_arrow_reader(batch_rows)
        if fmt == "parquet":
            with pq.ParquetWriter(p, reader.schema) as w:
                for batch in reader:
                    w.write_batch(batch)
        else:
            with pa_csv.CSVWriter(p, reader.schema) as w:
                for batch in reader:
                    w.write_batch(batch)

    return atomic_write(path, write)


# ----------------------------------------------------------------------------- CoNLL-U


def _fmt_list(values: list[str]) -> str:
    return ",".join(values)


def conllu_lines(con, eval_id: str) -> list[str]:
    """CoNLL-U of the evaluated text: spaCy words (FORM, UPOS, XPOS, FEATS; no lemma, no
    dependencies), sentences from spaCy's senter, and in MISC the pause data of the model
    tokens whose first non-space character lies in the word:
    `ExpPauses=1.73|GreedyPauses=2|Pauses=2|DK=0.91,0.40,0.05|SpaceAfter=No`
    (Pauses only for adaptive evaluations, DK only for W > 1; values rounded to 0.01).
    A word spanning several model tokens lists one value per token (`ExpPauses=0.20,1.10`),
    DK vectors separated by ';', and `ModelTokens=N`."""
    info = require_eval(con, eval_id)
    adaptive = observes_pauses(info["mode"])  # pauses in context per token
    docs = con.execute(
        "SELECT doc_id, text FROM docs WHERE eval_id = ? ORDER BY doc_id", [eval_id]
    ).fetchall()
    words = con.execute(
        "SELECT doc_id, char_start, char_end, word, upos, tag, morph, sent_start, space_after "
        "FROM words WHERE eval_id = ? ORDER BY doc_id, widx",
        [eval_id],
    ).df()
    toks = con.execute(
        """SELECT doc_id, char_start, char_end, printf('%.2f', expected_pauses) AS e, greedy_pauses::VARCHAR AS g,
                  coalesce(pauses::VARCHAR, '') AS p,
                  array_to_string(list_transform(dk, lambda x: coalesce(printf('%.2f', x), 'NA')), ',') AS dk
           FROM tokens WHERE eval_id = ? ORDER BY doc_id, idx""",
        [eval_id],
    ).df()
    w_by_doc = {k: g for k, g in words.groupby("doc_id", sort=False)}
    t_by_doc = {k: g for k, g in toks.groupby("doc_id", sort=False)}
    lines = [f"# cyb_eval = {eval_id}"]
    for doc_id, text in docs:
        w, t = w_by_doc.get(doc_id), t_by_doc.get(doc_id)
        if w is None or not len(w):
            continue
        starts, ends = w["char_start"].to_numpy(), w["char_end"].to_numpy()
        owned: list[list[int]] = [[] for _ in range(len(w))]
        if t is not None:
            p = pos.first_nonspace(text, t["char_start"].to_numpy(), t["char_end"].to_numpy())
            for row, k in enumerate(pos.covering(starts, ends, p).tolist()):
                if k >= 0:
                    owned[k].append(row)
        lines += _doc_lines(doc_id, w, t, owned, adaptive, info["w_max"] > 1)
    return lines


def _clean(v) -> str:
    s = "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
    s = re.sub(r"[\t\r\n]", " ", s)
    return s or "_"


def _doc_lines(
    doc_id, w: pd.DataFrame, t: pd.DataFrame | None, owned, adaptive: bool, has_dk: bool
) -> list[str]:
    out, sent, n_sent = [f"# newdoc id = {safe_name(doc_id)}"], [], 0
    cols = {c: w[c].tolist() for c in ("word", "upos", "tag", "morph", "sent_start", "space_after")}
    tc = {c: t[c].tolist() for c in ("e", "g", "p", "dk")} if t is not None else {}

    def flush():
        nonlocal n_sent
        if sent:
            n_sent += 1
            text = "".join(form + (" " if space else "") for form, space, _ in sent).rstrip()
            out.extend(
                [
                    f"# sent_id = {safe_name(doc_id)}-s{n_sent}",
                    f"# text = {text}",
                    *(r for _, _, r in sent),
                    "",
                ]
            )
            sent.clear()

    for i in range(len(w)):
        if cols["sent_start"][i] and sent:
            flush()
        form = _clean(cols["word"][i])
        misc = []
        if rows := owned[i]:
            misc.append("ExpPauses=" + _fmt_list([tc["e"][r] for r in rows]))
            misc.append("GreedyPauses=" + _fmt_list([tc["g"][r] for r in rows]))
            if adaptive:
                misc.append("Pauses=" + _fmt_list([tc["p"][r] or "NA" for r in rows]))
            if has_dk:
                misc.append("DK=" + ";".join(tc["dk"][r] for r in rows))
            if len(rows) > 1:
                misc.append(f"ModelTokens={len(rows)}")
        if not cols["space_after"][i]:
            misc.append("SpaceAfter=No")
        row = "\t".join(
            [
                str(len(sent) + 1),
                form,
                "_",
                _clean(cols["upos"][i]),
                _clean(cols["tag"][i]),
                _clean(cols["morph"][i]),
                "_",
                "_",
                "_",
                "|".join(misc) or "_",
            ]
        )
        sent.append((form, bool(cols["space_after"][i]), row))
    flush()
    return out


def export_conllu(con, eval_id: str, out_dir: str | Path, name: str | None = None) -> Path:
    path = safe_path(out_dir, name or f"{safe_name(eval_id)}.conllu")
    lines = conllu_lines(con, eval_id)
    return atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n", encoding="utf-8"))


# ----------------------------------------------------------------------------- Table 3

_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _show(token: str) -> str:
    """A token as the paper prints it: surrounding spaces dropped, other whitespace visible."""
    s = token.strip() or token
    return s.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "·") if not s.strip() else s


def table3(
    con,
    eval_id: str,
    fmt: str = "markdown",
    measure: str = "expected",
    min_count: int = 20,
    top: int = 10,
    token_class: str | None = None,
) -> str:
    """The four-quadrant token table (paper's Table 3) as Markdown or LaTeX; with `token_class`,
    only the rows that predict a token of that class (analysis.classes.CLASSES)."""
    _check_format(fmt, TABLE3_FORMATS)
    q = queries.token_quadrants(con, eval_id, measure, min_count, top, token_class)
    return table3_from(q, eval_id, fmt, measure, min_count, top, token_class)


def table3_from(
    q: pd.DataFrame,
    eval_id: str,
    fmt: str,
    measure: str,
    min_count: int,
    top: int,
    token_class: str | None = None,
) -> str:
    """`table3` of quadrants already computed (analysis.queries.quadrants)."""
    _check_format(fmt, TABLE3_FORMATS)
    rows_of = f"{eval_id} (rows predicting {token_class} tokens)" if token_class else eval_id
    if q.empty:
        raise StoreError(f"no token type occurs {min_count} times in {rows_of}; lower --min-count")
    mt, vt = q["median_threshold"].iloc[0], q["variance_threshold"].iloc[0]
    esc = (
        (lambda s: "".join(_LATEX.get(c, c) for c in s))
        if fmt == "latex"
        else (lambda s: s.replace("|", "\\|"))
    )
    cell = {
        (m, v): " ".join(esc(_show(t)) for t in g.sort_values("rank")["token"])
        for (m, v), g in q.groupby(["median_level", "variance_level"])
    }
    head = [
        f"{measure} pauses after the token",
        f"low variance (<= {vt:.3g})",
        f"high variance (> {vt:.3g})",
    ]
    rows = [
        [f"few (median <= {mt:.3g})", cell.get(("low", "low"), ""), cell.get(("low", "high"), "")],
        [
            f"many (median > {mt:.3g})",
            cell.get(("high", "low"), ""),
            cell.get(("high", "high"), ""),
        ],
    ]
    caption = (
        f"Token types of {rows_of} with at least {min_count} occurrences, split at the median over "
        f"types of the per-type median and variance of {measure} pauses; top {top} per quadrant."
    )
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + f"\n\n{caption}\n"
    tex = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{lp{0.38\linewidth}p{0.38\linewidth}}",
        r"\hline",
        " & ".join(esc(h).replace("<=", r"$\le$").replace(">", r"$>$") for h in head) + r" \\",
        r"\hline",
    ]
    tex += [
        " & ".join([esc(r[0]).replace("<=", r"$\le$").replace(">", r"$>$"), r[1], r[2]]) + r" \\"
        for r in rows
    ]
    tex += [r"\hline", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}"]
    return "\n".join(tex) + "\n"


def export_table3(
    con, eval_id: str, out_dir: str | Path, name: str | None = None, fmt: str = "markdown", **kwargs
) -> Path:
    text = table3(con, eval_id, fmt, **kwargs)
    path = safe_path(out_dir, name or f"table3-{safe_name(eval_id)}{SUFFIX[fmt]}")
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
