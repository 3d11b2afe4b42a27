"""The waiting experiments (configs/waiting/*.toml): run directories and their evaluation
database -> the waiting_*.parquet tables that section 10 reads.

An experiment is the run id's prefix before the first '.'; every experiment whose name starts
with `waiting-` is collected, however many there are. Evaluations of typed-in text (dataset
`text/...`) are collected whatever their run id, since they are usually of a checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .collect import RUN_DIR
from .data import ResultsError

PREFIX = "waiting-"
TEXT = "text/"
TABLES = ("runs", "evals", "classes", "calibration", "curves")


def experiment_of(run_id: str) -> str:
    return run_id.split(".", 1)[0] if "." in run_id else ""


def is_waiting(run_id: str) -> bool:
    return experiment_of(run_id).startswith(PREFIX)


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


def _from_dirs(root: Path) -> tuple[list[dict], list[dict]]:
    """Run rows and validation curves of every run directory under root/waiting-*/."""
    runs, curves = [], []
    for cfg_path in sorted(root.glob(f"{PREFIX}*/*/config.json")):
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


def _from_db(db: Path, known: set[str]) -> dict[str, list[pd.DataFrame]]:
    """Evaluations, per-class summaries and calibration; run rows for waiting runs whose
    directory is not here (from the settings the database keeps)."""
    from .. import classes, queries, store

    parts = {k: [] for k in TABLES}
    with store.reading(db) as con:
        ev = queries.run_summary(con)
        ev = ev[ev["run_id"].map(is_waiting) | ev["dataset"].str.startswith(TEXT)]
        parts["evals"].append(ev.drop(columns=["created_at"]))
        for r in ev.itertuples():
            ids = {"eval_id": r.eval_id, "run_id": r.run_id, "dataset": r.dataset}
            try:
                parts["classes"].append(classes.class_summary(con, r.eval_id).assign(**ids))
                if r.w_max and r.w_max >= 2:
                    cal = classes.class_calibration(con, r.eval_id)
                    parts["calibration"].append(cal.assign(**ids))
            except store.StoreError as e:  # stored before token classes existed
                print(f"note: {e}; left out of section 10", file=sys.stderr)
        for r in queries.run_rows(con).itertuples():
            if is_waiting(r.run_id) and r.run_id not in known:
                cfg = (json.loads(r.params) if r.params else {}).get("config") or {}
                row = _run_row(r.run_id, cfg, [], r.run_status == "complete")
                parts["runs"].append(pd.DataFrame([row]))
    return parts


def collect_waiting(root: Path | None, dbs: Sequence[Path] = ()) -> dict[str, pd.DataFrame]:
    """`waiting_<table>` -> DataFrame for every table with rows, from the run directories under
    `root` and the databases `dbs` (those that exist); what is missing is left out with a note on
    stderr, so the paper's document builds without any waiting experiment."""
    runs, curves = _from_dirs(Path(root)) if root and Path(root).is_dir() else ([], [])
    parts = {k: [] for k in TABLES}
    parts["runs"].append(pd.DataFrame(runs))
    parts["curves"].append(pd.DataFrame(curves))
    known = {r["run_id"] for r in runs}
    for db in [Path(p) for p in dbs if Path(p).is_file()]:
        from .. import store

        try:
            for k, v in _from_db(db, known).items():
                parts[k] += v
        except store.StoreError as e:
            raise ResultsError(f"waiting experiments: {e}") from e
        known |= {r for df in parts["runs"] if len(df) for r in df["run_id"]}
    tables = {
        f"waiting_{k}": pd.concat([x for x in v if len(x)], ignore_index=True)
        for k, v in parts.items()
        if any(len(x) for x in v)
    }
    missing = [k for k in TABLES if f"waiting_{k}" not in tables]
    if len(missing) == len(TABLES):
        where = ", ".join(map(str, dbs)) or "no database"
        print(f"note: no waiting experiments under {root} or in {where}", file=sys.stderr)
    elif missing:
        print(f"note: no waiting {', '.join(missing)} (those files are left out)", file=sys.stderr)
    return tables


def update(out: Path, root: Path | None, dbs: Sequence[Path] = ()) -> Path:
    """Collect only the waiting experiments into `out`, keeping its other tables as they are
    (for a checkout without the paper's runs and database)."""
    from cyb_core.atomic import atomic_save_dir

    if not (out / "runs.parquet").exists():
        raise ResultsError(f"no results data in {out} to add the waiting experiments to")
    tables = collect_waiting(root, dbs)

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for f in out.glob("*.parquet"):
            if not f.name.startswith("waiting_"):  # the old waiting tables are replaced whole
                shutil.copy2(f, tmp / f.name)
        for name, df in tables.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False, compression="zstd")

    atomic_save_dir(out, write)
    return out
