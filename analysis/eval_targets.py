"""Which checkpoint `cyb eval` evaluates and what is known about its run: run ids, run
directories, checkpoints on disk or stored in the database, the training log, the run's row.

run_id (one rule, `run_id_of`): for a run directory (runs/NAME, with final/ or ckpt/) or one of
its checkpoints (runs/NAME/final, runs/NAME/ckpt), the id the directory records in run.json
(the experiment runner records `<experiment>.<run>`, e.g. demo.cyb-ap-1x1-s0) or else its name;
otherwise the checkpoint directory's name (data/base -> "base"). `--run-id` overrides it.
TARGET may also be a run id the database knows: its stored checkpoint is evaluated again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from . import store
from .eval_inputs import EvalError

LOG_COLUMNS = ("step", "tokens_seen", "loss", "lr", "mean_expected_pauses", "elapsed_s")


@dataclass
class Target:
    run_id: str
    checkpoint: Path
    run_dir: Path | None  # None for a bare checkpoint
    status: str  # complete | partial | checkpoint
    config: dict | None  # the run's config.json (TrainConfig), when known
    log_path: Path | None


def _is_checkpoint(p: Path) -> bool:
    return (p / "config.json").is_file() and any(p.glob("*.safetensors"))


RUN_FILE = "run.json"  # in a run directory: {"run_id": ...}, written by record_run_id


def record_run_id(run_dir: str | Path, run_id: str) -> None:
    """Make `run_id` the id of the run directory, whichever command registers it later."""
    from cyb_core.atomic import atomic_write

    run_dir = Path(run_dir)
    if run_id_of(run_dir) != run_id:
        text = json.dumps({"run_id": run_id}) + "\n"
        atomic_write(run_dir / RUN_FILE, lambda p: p.write_text(text))


def run_id_of(run_dir: str | Path) -> str:
    """The id of a run directory: the one recorded in its run.json, else the directory's name."""
    run_dir = Path(run_dir)
    try:
        return json.loads((run_dir / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return run_dir.resolve().name


def find_stored_checkpoint(stored: str, roots: tuple[Path, ...] = ()) -> Path | None:
    """A checkpoint path as a run stored it, found on disk, or None: a relative path counts from
    the working directory, else from each of `roots`. A stored run/final or run/ckpt gives the
    run directory, so a run evaluated while partial is found complete later."""
    for base in (Path("."), *roots):
        p = base / stored  # an absolute `stored` ignores base
        if p.name in ("final", "ckpt") and (p.parent / "log.jsonl").is_file():
            return p.parent
        if p.exists():
            return p
    return None


def _stored_checkpoint(run_id: str, db: str | Path | None) -> Path | None:
    """The checkpoint the database stored for `run_id`, found on disk, or None. A relative path
    counts from the working directory, else from the folder that holds the database's folder
    (data/cyb.duckdb -> the project), by find_stored_checkpoint."""
    from .runs import run_checkpoint

    path = store.default_db_path(db)
    if not path.is_file():
        return None
    with store.reading(path) as con:
        stored = run_checkpoint(con, run_id)
    if stored is None:
        return None
    found = find_stored_checkpoint(stored, (path.resolve().parent.parent,))
    if found is not None:
        return found
    raise EvalError(
        f"run {run_id} was evaluated from {stored}, which is gone: give its directory instead"
    )


def resolve_target(
    path: str | Path, run_id: str | None = None, db: str | Path | None = None
) -> Target:
    """Find the checkpoint to evaluate and what is known about its run (see module docstring).
    A `path` that does not exist is looked up as a run id in the database `db`, then as a hub
    id in the local Hugging Face cache (never downloaded: a mistyped run id must not go online).
    """
    path = Path(path)
    if not path.exists():
        known = _stored_checkpoint(str(path), db)
        if known is None:
            from cyb_core.model_files import cached

            known = cached(str(path))
        if known is None:
            raise EvalError(
                f"no run or checkpoint at {path}, no run {str(path)!r} in "
                f"{store.default_db_path(db)} and no such model in the local Hugging Face "
                "cache: give a directory, a stored run id or a cached hub id"
            )
        return resolve_target(known, run_id or str(path))
    run_dir, ckpt, status = None, None, "checkpoint"
    if _is_checkpoint(path / "final"):
        run_dir, ckpt, status = path, path / "final", "complete"
    elif _is_checkpoint(path / "ckpt"):
        run_dir, ckpt, status = path, path / "ckpt", "partial"
    elif _is_checkpoint(path):
        ckpt = path
        if path.name in ("final", "ckpt") and (path.parent / "log.jsonl").is_file():
            run_dir, status = path.parent, "complete" if path.name == "final" else "partial"
    else:
        raise EvalError(
            f"{path} is neither a run directory (with final/ or ckpt/) nor a checkpoint "
            "(config.json + *.safetensors)"
        )
    config, log_path = None, None
    if run_dir is not None:
        cfg = run_dir / "config.json"
        config = json.loads(cfg.read_text()) if cfg.is_file() else None
        log_path = run_dir / "log.jsonl"
    else:  # a published checkpoint (cyb pretrain's data/base) carries its config and log
        summary = ckpt / "summary.json"
        if summary.is_file():
            config = json.loads(summary.read_text()).get("config")
            status = "complete"
        log_path = ckpt / "train_log.jsonl"
    name = run_id or (run_id_of(run_dir) if run_dir is not None else ckpt.resolve().name)
    return Target(name, ckpt, run_dir, status, config, log_path if log_path.is_file() else None)


def read_train_log(path: Path | None) -> pa.Table | None:
    """log.jsonl -> Arrow table of the train_log columns; a torn last line is skipped."""
    if path is None:
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    types = {"step": pa.int32(), "tokens_seen": pa.int64()}
    return pa.table(
        {
            c: pa.array([r.get(c) for r in rows], type=types.get(c, pa.float64()))
            for c in LOG_COLUMNS
        }
    )


def run_row(target: Target, settings, train_log: pa.Table | None) -> dict:
    cfg = target.config or {}
    seen = (
        train_log["tokens_seen"][-1].as_py()
        if train_log is not None and train_log.num_rows
        else None
    )
    return {
        "run_id": target.run_id,
        "variant": settings.variant,
        "recipe": settings.recipe,
        "w_max": settings.w,
        "params": {
            "cyb": asdict(settings),
            "config": target.config,
            "checkpoint": str(target.checkpoint),
        },
        "seed": cfg.get("seed"),
        "train_tokens": seen if seen is not None else cfg.get("tokens"),
        "base": cfg.get("init"),
        "status": target.status,
    }
