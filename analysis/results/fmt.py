"""Markdown cells and tables; a missing value (None or NaN) prints as an en dash."""

from __future__ import annotations

import math

import pandas as pd


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        return "–" if _missing(v) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def num(v, fmt=".1f") -> str:
    return "–" if _missing(v) else format(v, fmt)


def mean_sd(values: pd.Series, fmt=".1f") -> str | None:
    """Mean ± sample sd; a single value as is."""
    values = values.dropna()
    if values.empty:
        return None
    if len(values) == 1:
        return format(values.iloc[0], fmt)
    return f"{values.mean():{fmt}} ± {values.std(ddof=1):{fmt}}"


def change(a, b) -> str | None:
    """a relative to b, in percent."""
    if a is None or b is None or any(map(math.isnan, (a, b))):
        return None
    return f"{100 * (a / b - 1):+.1f}%"


def token(t: str) -> str:
    """A BPE token inside backticks in a table cell: whitespace made visible."""
    return t.replace("`", "'").replace("\n", "\\n").replace(" ", "␣")
