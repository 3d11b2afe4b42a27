"""`collect`: run directories and the evaluation database -> the compact Parquet tables that are
all `render` reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .data import BASE_RUN, DATA_DIR, MAIN, ResultsError
from .experiment import RUN_DIR
from .paper import PAPER_TOKENS

EXPERIMENTS = (
    "paper-lr",
    "paper-variants",
    "paper-pause-init",
    "paper-hparams",
    "paper-data",
    "paper-scratch",
)
# kept in the token statistics however rare, so that section 8 can look them up
PAPER_WORDS = {w for words in PAPER_TOKENS.values() for w in words.split()}


def _runs(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run directory (config and final summary), and every train-log line."""
    runs, logs = [], []
    for exp in EXPERIMENTS:
        for cfg_path in sorted((root / exp).glob("*/config.json")):
            d = cfg_path.parent
            m = RUN_DIR.match(d.name)
            if not m:
                continue
            cfg = json.loads(cfg_path.read_text())
            summary_path = d / "final" / "summary.json"
            summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            run_id = f"{exp}.{d.name}"
            runs.append(
                {
                    "run_id": run_id,
                    "experiment": exp,
                    "name": m["name"],
                    "regime": m["regime"],
                    "seed": int(m["seed"]),
                    "variant": cfg["variant"],
                    "w": cfg["w"],
                    "lr": cfg["lr"],
                    "psi": cfg["psi"],
                    "pause_init": cfg.get("pause_init", "keep"),
                    "hparams": json.dumps(cfg["hparams"], sort_keys=True),
                    "tokens": cfg["tokens"],
                    "data_tokens": cfg["data_tokens"],
                    "batch_size": cfg["batch_size"],
                    "seq_len": cfg["seq_len"],
                    "init": cfg["init"],
                    "split": cfg["split"],
                    "complete": bool(summary),
                    "steps": summary.get("steps"),
                    "train_s": summary.get("elapsed_s"),
                    "val_ppl": summary.get("val", {}).get("ppl"),
                    "val_expected_pauses": summary.get("val", {}).get("expected_pauses"),
                }
            )
            log = d / "log.jsonl"
            if log.exists():
                rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
                logs += [{"run_id": run_id, **r} for r in rows]
    if not runs:
        raise ResultsError(
            f"no paper runs under {root}: run `make paper` (or cyb experiment configs/paper/*.toml)"
        )
    return pd.DataFrame(runs), pd.DataFrame(logs)


def _timing(log: Path) -> pd.DataFrame:
    """`START|END <config> <ISO time>` lines written by `make paper`."""
    rows = []
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("START", "END"):
                rows.append({"event": parts[0], "config": parts[1], "time": pd.Timestamp(parts[2])})
    return pd.DataFrame(rows, columns=["event", "config", "time"])


def collect(
    root: Path = Path("runs"),
    db: Path = Path("data/paper.duckdb"),
    out: Path = DATA_DIR,
    min_count: int = 20,
    waiting_root: Path | None = None,
    waiting_dbs: Sequence[Path] = (),
) -> Path:
    """Runs, train logs, evaluations and the aggregates behind every figure, as Parquet in `out`.
    `min_count`: occurrences a token type needs for the Table-3 quadrants. `waiting_root` /
    `waiting_dbs`: the waiting experiments' run directories and databases (section 10); neither
    given, they are not collected."""
    # imported here so that `render` needs neither torch nor DuckDB
    from cyb_core.atomic import atomic_save_dir

    from .. import queries, store
    from . import waiting

    runs, logs = _runs(root)
    if not Path(db).exists():
        raise ResultsError(f"no evaluation database at {db}: run `make paper` first")
    ids = set(runs["run_id"]) | {BASE_RUN}
    tables = {"runs": runs, "train_log": logs, "timing": _timing(root / "paper.log")}
    parts = {
        k: [] for k in ("steps", "hist", "calibration", "density", "table3", "token_stats", "tags")
    }
    with store.reading(db) as con:
        ev = queries.run_summary(con)
        ev = ev[ev["run_id"].isin(ids)].reset_index(drop=True)
        tables["evals"] = ev.drop(columns=["created_at"])
        for r in ev.itertuples():
            if r.w_max < 2:
                continue
            e = r.eval_id
            parts["steps"].append(queries.step_distribution(con, e).assign(eval_id=e))
            parts["hist"].append(queries.pause_histogram(con, e, bins=30).assign(eval_id=e))
            parts["calibration"].append(queries.calibration(con, e).assign(eval_id=e))
            if r.run_id.startswith(("paper-variants.cyb-", "paper-scratch.cyb-")):
                ts = queries.token_stats(con, e, min_count=1)
                keep = (ts["n"] >= min_count) | ts["token"].str.strip().isin(PAPER_WORDS)
                parts["token_stats"].append(ts[keep].assign(eval_id=e))
            if r.run_id == MAIN:
                for step in range(r.w_max - 1):
                    density = queries.calibration_density(con, e, step)
                    parts["density"].append(density.assign(eval_id=e, step=step))
                quadrants = queries.token_quadrants(con, e, min_count=min_count, top=12)
                parts["table3"].append(quadrants.assign(eval_id=e))
                tags = queries.pause_rates(con, e, by="tag", min_count=200)
                parts["tags"].append(tags.assign(eval_id=e))
    for k, v in parts.items():
        tables[k] = pd.concat(v, ignore_index=True) if v else pd.DataFrame()
    if waiting_root is not None or waiting_dbs:
        tables |= waiting.tables(waiting_root, waiting_dbs)

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for name, df in tables.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False, compression="zstd")

    atomic_save_dir(out, write)  # the committed data is replaced whole or not at all
    return out
