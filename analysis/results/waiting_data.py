"""Section 10's view of the waiting_*.parquet tables: one row per run with its held-out
evaluation and its per-class measures side by side."""

from __future__ import annotations

import pandas as pd

from cyb_core import variants

from .data import Data

CLASSES = ("answer", "synthetic", "natural")
TEXT = "text/"
# per-class columns of `frame`: <class>_<measure> from class_summary's column
MEASURES = {
    "nll": "nll",
    "accuracy": "accuracy",
    "pauses": "expected_pauses",
    "gain": "log_gain_last",
    "n": "n",
}


def table(d: Data, name: str) -> pd.DataFrame:
    """waiting_<name>, empty when it was not collected."""
    return getattr(d, f"waiting_{name}", pd.DataFrame())


def experiments(d: Data) -> list[str]:
    runs = table(d, "runs")
    return sorted(runs["experiment"].unique()) if len(runs) else []


def order(names) -> list[str]:
    """Run names in the registry's variant order (baseline, control, tbys, cyb-...), then by
    name."""
    keys = sorted(variants.VARIANTS, key=len, reverse=True)

    def rank(name: str) -> tuple[int, str]:
        v = next((k for k in keys if name == k or name.startswith(k + "-")), None)
        return (list(variants.VARIANTS).index(v) if v else len(keys), name)

    return sorted(set(names), key=rank)


def dataset(d: Data, experiment: str) -> str | None:
    """The held-out set of an experiment: the dense, non-text dataset most of its runs were
    evaluated on."""
    ev = table(d, "evals")
    if not len(ev):
        return None
    ev = ev[
        ev["run_id"].str.startswith(experiment + ".")
        & (ev["mode"] == "dense")
        & ~ev["dataset"].str.startswith(TEXT)
    ]
    if not len(ev):
        return None
    counts = ev.groupby("dataset").size()
    return sorted(counts.index, key=lambda k: (-counts[k], k))[0]


def _wide(per_class: pd.DataFrame, columns: dict[str, str], suffix: str = "") -> pd.DataFrame:
    """eval_id x (class, measure) -> one row per eval_id with <class>_<measure> columns."""
    out = per_class[["eval_id"]].drop_duplicates().set_index("eval_id")
    for c in CLASSES:
        sel = per_class[per_class["token_class"] == c].set_index("eval_id")
        for short, col in columns.items():
            out[f"{c}_{short}{suffix}"] = sel[col] if col in sel else float("nan")
    return out.reset_index()


def frame(d: Data, experiment: str) -> pd.DataFrame:
    """One row per run of `experiment`: its settings, train time, held-out perplexity on
    `dataset(d, experiment)` (NaN when not evaluated) and <class>_<measure> columns, plus
    <class>_partial0: the partial Spearman of d_0 with the gain of one step, given t_0."""
    runs = table(d, "runs")
    runs = runs[runs["experiment"] == experiment].copy()
    ds = dataset(d, experiment)
    ev = table(d, "evals")
    if ds is None:
        runs["eval_id"], runs["ppl"] = None, float("nan")
        out = runs
    else:
        ev = ev[(ev["dataset"] == ds) & (ev["mode"] == "dense")][["run_id", "eval_id", "ppl"]]
        out = runs.merge(ev, on="run_id", how="left")
    cls = table(d, "classes")
    if len(cls):
        out = out.merge(_wide(cls, MEASURES), on="eval_id", how="left")
    cal = table(d, "calibration")
    if len(cal):
        step0 = cal[cal["step"] == 0]
        out = out.merge(
            _wide(step0, {"partial": "partial_spearman"}, "0"), on="eval_id", how="left"
        )
    for c in CLASSES:  # columns for tables that were not collected
        for short in (*MEASURES, "partial0"):
            if f"{c}_{short}" not in out:
                out[f"{c}_{short}"] = float("nan")
    for col in ("w", "seed", "psi", "gamma", "train_s", "val_ppl", "tokens"):  # None -> NaN
        out[col] = pd.to_numeric(out[col])
    out["train_min"] = out["train_s"] / 60
    return out


def by_seed(f: pd.DataFrame, name: str, col: str) -> dict[int, float]:
    """seed -> value of `col` for the runs named `name`."""
    sel = f[(f["name"] == name) & f[col].notna() & f["seed"].notna()]
    return dict(zip(sel["seed"].astype(int), sel[col].astype(float), strict=True))


def text_evals(d: Data) -> pd.DataFrame:
    """Evaluations of typed-in text files, with their per-class rows."""
    cls = table(d, "classes")
    if not len(cls):
        return cls
    return cls[cls["dataset"].str.startswith(TEXT)]
