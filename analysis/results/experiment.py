"""Any family of experiments in docs/results.md: `<family>-<name>` run directories and their
evaluation databases -> `<family>_<table>.parquet`, and the per-run view a section reads.

A new experiment is a config (`configs/<family>/*.toml`, run ids `<family>-<grid>.<run>`) and a
section module that names its family (`waiting.py`, `frontier.py`); nothing here changes.

    standard_tables(family, root, dbs)  runs, curves, evals, classes, calibration of the family
    update(out, family, tables)         replace that family's tables in `out`, keep the rest
    frame(d, family, experiment)        one row per run: settings, held-out ppl, per-class measures

An experiment is the run id's prefix before the first '.'. Evaluations of typed-in text (dataset
`text/...`) are collected whatever their run id, since they are usually of a checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cyb_core import variants

from .data import Data, ResultsError

RUN_DIR = re.compile(r"^(?P<name>.+)-(?P<regime>\dx\d)-s(?P<seed>\d+)$")
TEXT = "text/"
TABLES = ("runs", "evals", "classes", "calibration", "curves")
CLASSES = ("answer", "synthetic", "natural")
# per-class columns of `frame`: <class>_<measure> from class_summary's column
MEASURES = {
    "nll": "nll",
    "accuracy": "accuracy",
    "pauses": "expected_pauses",
    "gain": "log_gain_last",
    "n": "n",
}


def experiment_of(run_id: str) -> str:
    return run_id.split(".", 1)[0] if "." in run_id else ""


def _member(family: str):
    return lambda run_id: experiment_of(run_id).startswith(f"{family}-")


# ----------------------------------------------------------------------------- collect


def _log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run_row(run_id: str, cfg: dict, log: list[dict], complete: bool) -> dict:
    m = RUN_DIR.match(run_id.split(".", 1)[1])
    val = [r for r in log if r.get("val_ppl") is not None]
    return {
        "run_id": run_id,
        "experiment": experiment_of(run_id),
        "name": m["name"] if m else run_id.split(".", 1)[1],
        "regime": m["regime"] if m else None,
        "seed": int(m["seed"]) if m else cfg.get("seed"),
        "variant": cfg.get("variant"),
        "w": cfg.get("w"),
        "psi": cfg.get("psi"),
        "gamma": (cfg.get("hparams") or {}).get("gamma"),
        "hparams": json.dumps(cfg.get("hparams") or {}, sort_keys=True),
        "init": cfg.get("init"),
        "tokens": cfg.get("tokens"),
        "tokens_seen": log[-1].get("tokens_seen") if log else None,
        "complete": complete,
        # the log's last elapsed_s: training time, resumed runs included (evaluation excluded)
        "train_s": log[-1].get("elapsed_s") if log else None,
        "val_ppl": val[-1]["val_ppl"] if val else None,
        "val_nll": val[-1].get("val_nll") if val else None,
    }


def _from_dirs(family: str, root: Path) -> tuple[list[dict], list[dict]]:
    """Run rows and validation curves of every run directory under root/<family>-*/."""
    runs, curves = [], []
    for cfg_path in sorted(root.glob(f"{family}-*/*/config.json")):
        d = cfg_path.parent
        run_id = f"{d.parent.name}.{d.name}"
        log = _log(d / "log.jsonl")
        complete = (d / "final" / "summary.json").exists()
        runs.append(_run_row(run_id, json.loads(cfg_path.read_text()), log, complete))
        cols = ("step", "tokens_seen", "val_ppl", "val_nll")
        curves += [
            {"run_id": run_id, **{c: r.get(c) for c in cols}}
            for r in log
            if r.get("val_ppl") is not None
        ]
    return runs, curves


def _from_db(family: str, db: Path, known: set[str]) -> dict[str, list[pd.DataFrame]]:
    """Evaluations, per-class summaries and calibration; run rows for the family's runs whose
    directory is not here (from the settings the database keeps)."""
    from .. import classes, queries, store

    member = _member(family)
    parts = {k: [] for k in TABLES}
    with store.reading(db) as con:
        ev = queries.run_summary(con)
        ev = ev[ev["run_id"].map(member) | ev["dataset"].str.startswith(TEXT)]
        parts["evals"].append(ev.drop(columns=["created_at"]))
        for r in ev.itertuples():
            ids = {"eval_id": r.eval_id, "run_id": r.run_id, "dataset": r.dataset}
            try:
                parts["classes"].append(classes.class_summary(con, r.eval_id).assign(**ids))
                if r.w_max and r.w_max >= 2:
                    cal = classes.class_calibration(con, r.eval_id)
                    parts["calibration"].append(cal.assign(**ids))
            except store.StoreError as e:  # stored before token classes existed
                print(f"note: {e}; left out of the {family} section", file=sys.stderr)
        for r in queries.run_rows(con).itertuples():
            if member(r.run_id) and r.run_id not in known:
                cfg = (json.loads(r.params) if r.params else {}).get("config") or {}
                row = _run_row(r.run_id, cfg, [], r.run_status == "complete")
                parts["runs"].append(pd.DataFrame([row]))
    return parts


def standard_tables(
    family: str, root: Path | None, dbs: Sequence[Path] = ()
) -> dict[str, pd.DataFrame]:
    """`<family>_<table>` -> DataFrame for every table with rows, from the run directories under
    `root` and the databases `dbs` (those that exist); what is missing is left out with a note on
    stderr, so the document builds without any such experiment."""
    runs, curves = _from_dirs(family, Path(root)) if root and Path(root).is_dir() else ([], [])
    parts = {k: [] for k in TABLES}
    parts["runs"].append(pd.DataFrame(runs))
    parts["curves"].append(pd.DataFrame(curves))
    known = {r["run_id"] for r in runs}
    for db in [Path(p) for p in dbs if Path(p).is_file()]:
        from .. import store

        try:
            for k, v in _from_db(family, db, known).items():
                parts[k] += v
        except store.StoreError as e:
            raise ResultsError(f"{family} experiments: {e}") from e
        known |= {r for df in parts["runs"] if len(df) for r in df["run_id"]}
    tables = {
        f"{family}_{k}": pd.concat([x for x in v if len(x)], ignore_index=True)
        for k, v in parts.items()
        if any(len(x) for x in v)
    }
    missing = [k for k in TABLES if f"{family}_{k}" not in tables]
    if len(missing) == len(TABLES):
        where = ", ".join(map(str, dbs)) or "no database"
        print(f"note: no {family} experiments under {root} or in {where}", file=sys.stderr)
    elif missing:
        print(f"note: no {family} {', '.join(missing)} (those files are left out)", file=sys.stderr)
    return tables


def update(out: Path, family: str, tables: dict[str, pd.DataFrame]) -> Path:
    """Replace the `<family>_*` tables of `out` by `tables`, keeping its other tables as they
    are (for a checkout without the paper's runs and database); all or nothing."""
    from cyb_core.atomic import atomic_save_dir

    if not (out / "runs.parquet").exists():
        raise ResultsError(f"no results data in {out} to add the {family} experiments to")

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for f in out.glob("*.parquet"):
            if not f.name.startswith(f"{family}_"):  # the old tables are replaced whole
                shutil.copy2(f, tmp / f.name)
        for name, df in tables.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False, compression="zstd")

    atomic_save_dir(out, write)
    return out


# ----------------------------------------------------------------------------- view


def table(d: Data, family: str, name: str) -> pd.DataFrame:
    """<family>_<name>, empty when it was not collected."""
    return getattr(d, f"{family}_{name}", pd.DataFrame())


def experiments(d: Data, family: str) -> list[str]:
    runs = table(d, family, "runs")
    return sorted(runs["experiment"].unique()) if len(runs) else []


def rank(name: str) -> tuple[int, str]:
    """Sort key of a run name: the registry's variant order (baseline, control, tbys, cyb-...)
    of the variant it starts with, then the name."""
    keys = sorted(variants.VARIANTS, key=len, reverse=True)  # cyb-ap before a shorter prefix
    v = next((k for k in keys if name == k or name.startswith(k + "-")), None)
    return (list(variants.VARIANTS).index(v) if v else len(keys), name)


def order(names) -> list[str]:
    """Run names in `rank` order."""
    return sorted(set(names), key=rank)


def dataset(d: Data, family: str, experiment: str) -> str | None:
    """The held-out set of an experiment: the dense, non-text dataset most of its runs were
    evaluated on."""
    ev = table(d, family, "evals")
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


def frame(d: Data, family: str, experiment: str) -> pd.DataFrame:
    """One row per run of `experiment`: its settings, train time, held-out perplexity on
    `dataset(...)` (NaN when not evaluated) and <class>_<measure> columns, plus
    <class>_partial0: the partial Spearman of d_0 with the gain of one step, given t_0."""
    runs = table(d, family, "runs")
    runs = runs[runs["experiment"] == experiment].copy()
    ds = dataset(d, family, experiment)
    ev = table(d, family, "evals")
    if ds is None:
        runs["eval_id"], runs["ppl"] = None, float("nan")
        out = runs
    else:
        ev = ev[(ev["dataset"] == ds) & (ev["mode"] == "dense")][["run_id", "eval_id", "ppl"]]
        out = runs.merge(ev, on="run_id", how="left")
    cls = table(d, family, "classes")
    if len(cls):
        out = out.merge(_wide(cls, MEASURES), on="eval_id", how="left")
    cal = table(d, family, "calibration")
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


def text_evals(d: Data, family: str) -> pd.DataFrame:
    """Evaluations of typed-in text files, with their per-class rows."""
    cls = table(d, family, "classes")
    if not len(cls):
        return cls
    return cls[cls["dataset"].str.startswith(TEXT)]
