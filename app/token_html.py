"""The Text page's coloured text as HTML: each token a span whose background shows its
processing steps (or the difference between two runs) and whose title, shown on hover, holds
its d_i, t_i, s_i and part of speech. Pure functions of query rows, testable without Streamlit.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
from plotly.colors import sample_colorscale

STEPS_SCALE = "YlOrRd"  # processing steps 1..W, light to dark
DIFF_SCALE = "RdBu_r"  # run B minus run A, blue (fewer) to red (more)


def show_token(token: str) -> str:
    """A token for a label: without its surrounding spaces, or with its whitespace made
    visible when it is nothing else."""
    s = str(token)
    return s.strip() or s.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "·")


def _text_color(rgb: str) -> str:
    r, g, b = (int(v) for v in rgb[rgb.index("(") + 1 : -1].split(",")[:3])
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"


def step_colors(steps: np.ndarray, w: int) -> list[str]:
    """Background colours for processing steps in [1, W] (NaN: none)."""
    pos = np.clip((np.asarray(steps, float) - 1) / max(w - 1, 1), 0, 1)
    cols = sample_colorscale(STEPS_SCALE, [0.0 if math.isnan(p) else float(p) for p in pos])
    return ["" if math.isnan(p) else c for p, c in zip(pos, cols, strict=True)]


def diff_colors(diff: np.ndarray, span: float) -> list[str]:
    """Background colours for differences in [-span, span] (NaN: none)."""
    pos = np.clip((np.asarray(diff, float) / max(span, 1e-9) + 1) / 2, 0, 1)
    cols = sample_colorscale(DIFF_SCALE, [0.5 if math.isnan(p) else float(p) for p in pos])
    return ["" if math.isnan(p) else c for p, c in zip(pos, cols, strict=True)]


def _missing(x) -> bool:
    """None, NaN or a masked entry (DuckDB lists with NULLs arrive as masked arrays)."""
    return x is None or x is np.ma.masked or (isinstance(x, float) and math.isnan(x))


def _vec(v) -> str:
    if _missing(v):
        return "-"
    return "[" + ", ".join("-" if _missing(x) else f"{float(x):.2f}" for x in v) + "]"


def _num(v, fmt: str = ".2f") -> str:
    return "-" if v is None or pd.isna(v) else format(v, fmt)


def _spans(pieces, gaps, colors, titles) -> str:
    out = []
    for piece, gap, color, title in zip(pieces, gaps, colors, titles, strict=True):
        text = html.escape(piece).replace("\n", "<br>")
        style = (
            f' style="background:{color};color:{_text_color(color)};border-radius:2px"'
            if color
            else ""
        )
        out.append(
            f'<span class="tok"{style} title="{html.escape(title, quote=True)}">{text}</span>'
        )
        if gap:
            out.append(html.escape(gap).replace("\n", "<br>"))
    body = "".join(out)
    return f'<div class="cyb-text" style="line-height:1.9;font-family:Georgia,serif;font-size:1.02rem;white-space:normal">{body}</div>'


def text_html(rows: pd.DataFrame, w: int, colour: str = "input") -> str:
    """The text with each token's background set by expected processing steps (1 + E[S]).

    colour="input": the token that is followed by the pauses (its own row);
    colour="predicted": the token predicted after them (the previous row's pauses).
    The title attribute (shown on hover) holds d_i, t_i, s_i, the next token and POS."""
    prev = colour == "predicted"
    p = "prev_" if prev else ""
    steps = 1 + rows[f"{p}expected_pauses"].to_numpy(float)
    titles = []
    for r in rows.to_dict("records"):
        v = {
            k: r[p + k]
            for k in ("expected_pauses", "greedy_pauses", "pauses", "dk", "t", "s", "nll")
        }
        head = (
            f"predicted {show_token(r['token'])!r} after {show_token(r['prev_token'])!r}"
            if prev
            else f"{show_token(r['token'])!r}, next {show_token(r['next_token'])!r}"
        )
        counts = f"expected pauses {_num(v['expected_pauses'])} · greedy {_num(v['greedy_pauses'], '.0f')}"
        if not pd.isna(v["pauses"]):
            counts += f" · taken {_num(v['pauses'], '.0f')}"
        pos = f"POS {r['upos'] or '-'} / {r['tag'] or '-'}" + (
            f" ({r['word']})" if r["word"] else ""
        )
        titles.append(
            "\n".join(
                [
                    head,
                    counts,
                    f"d_i {_vec(v['dk'])}",
                    f"t_i {_vec(v['t'])}",
                    f"s_i {_vec(v['s'])}",
                    f"-log p {_num(v['nll'])}",
                    pos,
                ]
            )
        )
    return _spans(rows["piece"], rows["gap"], step_colors(steps, w), titles)


def diff_html(
    a: pd.DataFrame, b: pd.DataFrame, w: int, colour: str = "input", names=("A", "B")
) -> str:
    """The text coloured by run B's minus run A's processing steps (blue: B pauses less)."""
    p = "prev_" if colour == "predicted" else ""
    col = f"{p}expected_pauses"
    m = a.merge(
        b[["idx", "token_id", col]], on=["idx", "token_id"], how="left", suffixes=("", "_b")
    )
    diff = (m[f"{col}_b"] - m[col]).to_numpy(float)
    titles = [
        f"{show_token(t)!r}\n{names[0]}: {_num(1 + x)} steps\n{names[1]}: {_num(1 + y)} steps\n"
        f"difference {_num(d, '+.2f')}"
        for t, x, y, d in zip(m["token"], m[col], m[f"{col}_b"], diff, strict=True)
    ]
    return _spans(m["piece"], m["gap"], diff_colors(diff, max(w - 1, 1)), titles)


def gain_html(rows: pd.DataFrame, gain: pd.DataFrame, span: float, names=("base", "other")) -> str:
    """The text coloured by a per-token nll gain (analysis.text.nll_gain, `gain` = nll of
    names[0] minus nll of names[1]; blue: names[1] predicts the token better), next to pauses."""
    m = rows[["idx", "token_id", "token", "piece", "gap", "pauses", "expected_pauses"]].merge(
        gain, on=["idx", "token_id"], how="left"
    )
    d = m["gain"].to_numpy(float)
    titles = [
        f"{show_token(t)!r}: -log p {_num(a)} ({names[0]}) vs {_num(b)} ({names[1]}), "
        f"gain {_num(g, '+.2f')}\npauses here: {_num(p if not pd.isna(p) else e)}"
        for t, a, b, g, p, e in zip(
            m["token"], m["nll_a"], m["nll_b"], d, m["pauses"], m["expected_pauses"], strict=True
        )
    ]
    # blue where names[1] is better: the diff scale is blue for negative values
    return _spans(m["piece"], m["gap"], diff_colors(-d, span), titles)


def gain_legend_html(span: float, names=("base", "other")) -> str:
    ticks = np.linspace(-span, span, 5)
    cells = "".join(
        f'<span style="display:inline-block;padding:2px 12px;background:{c};color:{_text_color(c)}">{t:+.1f}</span>'
        for t, c in zip(ticks, diff_colors(-ticks, span), strict=True)
    )
    return (
        f'<div class="cyb-legend">nll of {names[0]} minus nll of {names[1]} (blue: '
        f"{names[1]} better): {cells}</div>"
    )


def legend_html(w: int) -> str:
    """A colour bar for processing steps 1..W."""
    ticks = np.linspace(1, w, max(w, 2))
    cells = "".join(
        f'<span style="display:inline-block;padding:2px 14px;background:{c};color:{_text_color(c)}">{t:g}</span>'
        for t, c in zip(ticks, step_colors(ticks, w), strict=True)
    )
    return f'<div class="cyb-legend">expected processing steps (1 + E[pauses]): {cells}</div>'


def diff_legend_html(w: int) -> str:
    """A colour bar for run B's minus run A's processing steps, -(W-1)..W-1."""
    span = max(w - 1, 1)
    ticks = np.linspace(-span, span, 5)
    cells = "".join(
        f'<span style="display:inline-block;padding:2px 12px;background:{c};color:{_text_color(c)}">{t:+g}</span>'
        for t, c in zip(ticks, diff_colors(ticks, span), strict=True)
    )
    return f'<div class="cyb-legend">B minus A, processing steps: {cells}</div>'


def show_pauses(pieces, pauses) -> str:
    """A continuation as `cyb generate --show-pauses` prints it: each token, then its pauses
    in brackets (` sat[1] on[0]`)."""
    return "".join(f"{p}[{k}]" for p, k in zip(pieces, pauses, strict=True))


def generation_html(prompt: str, pieces, pauses, w: int, recipe: str = "constant") -> str:
    """The prompt in grey, then each generated token coloured by its processing steps
    (1 + pauses) and followed by its pause count in brackets, as --show-pauses prints it."""

    def what(k: int) -> str:
        if recipe == "constant":  # the W-1 pauses are always taken; S is where it answered
            return f"answered after {k} of {max(w - 1, 0)} pauses"
        return f"took {k} pause{'' if k == 1 else 's'} (at most {max(w - 1, 0)})"

    out = [f'<span class="cyb-prompt" style="color:#888">{html.escape(prompt)}</span>']
    colors = step_colors(1 + np.asarray(pauses, float), w) if len(pauses) else []
    for piece, k, color in zip(pieces, pauses, colors, strict=True):
        text = html.escape(piece).replace("\n", "<br>")
        style = f"background:{color};color:{_text_color(color)};border-radius:2px"
        title = html.escape(f"{show_token(piece)!r} {what(k)}", quote=True)
        out.append(
            f'<span class="tok gen" style="{style}" title="{title}">{text}</span>'
            f'<span class="cnt" style="color:#888;font-size:0.75em">[{k}]</span>'
        )
    body = "".join(out).replace("\n", "<br>")
    return f'<div class="cyb-gen" style="line-height:1.9;font-family:Georgia,serif;font-size:1.02rem">{body}</div>'
