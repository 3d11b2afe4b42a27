"""`cyb experiment CONFIG`: a grid of runs (variants x data regimes x seeds), resumable.

The config is TOML:

    out = "runs/demo"                 # run directories go to out/<name>-<regime>-s<seed>;
                                      # the run id in the database is demo.<name>-<regime>-s<seed>,
                                      # recorded in the run's run.json so `cyb eval DIR` uses it too
    db = "data/cyb.duckdb"            # evaluation store; --db and $CYB_DB take precedence

    [defaults]                        # any cyb_core.train_config.TrainConfig field
    init = "data/base"
    tokens = 40000                    # budget of the 1x1 regime, real tokens
    w = 4

    [eval]                            # what every run is evaluated on
    split = "heldout"
    modes = ["dense"]
    max_chars = 60000                 # optional: evaluate on a slice of the split
    batch_size = 16                   # optional: windows per forward pass (speed, not results)

    [grid]
    seeds = [0]
    regimes = ["1x1"]                 # 1x1, 2x1 (two epochs), 1x2, 1x3 (two, three times the data)

    [[runs]]                          # one table per setting; fields override [defaults]
    name = "cyb-ap"
    variant = "cyb-ap"
    hparams = { omega = "0:0:0:1", gamma = 1.0 }
    modes = ["dense", "adaptive"]     # optional, overrides [eval].modes; also shuffled (after
                                      # adaptive) and uniformK (K pauses after every token)
    seeds = [0, 1, 2]                 # optional, overrides [grid].seeds (likewise regimes)

A run whose final model exists is not trained again; an evaluation already complete in the
database is not repeated; anything interrupted resumes from its last checkpoint. Several
processes (e.g. `torchrun --nproc-per-node 4 -m cyb experiment CONFIG`) split the grid
between them by RANK / WORLD_SIZE, each on GPU LOCAL_RANK.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from analysis import store
from analysis.eval_inputs import load_docs
from analysis.eval_targets import record_run_id
from analysis.evaluation import run_eval
from cyb_core import variants
from cyb_core.distributed import env_world, resolve_device
from cyb_core.names import parse_mode
from cyb_core.train import train
from cyb_core.train_config import TrainConfig

REGIMES = {"1x1": (1, 1), "2x1": (2, 1), "1x2": (2, 2), "1x3": (3, 3)}  # (budget x, data x)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Job:
    run_id: str
    config: TrainConfig
    modes: tuple[str, ...]


def job_row(job: Job) -> dict:
    """A job as plain values (`cyb experiment --list --json`)."""
    return {
        "run_id": job.run_id,
        "out": job.config.out,
        "variant": job.config.variant,
        "w": job.config.w,
        "tokens": job.config.tokens,
        "data_tokens": job.config.data_tokens,
        "modes": list(job.modes),
    }


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no experiment config at {path}: pass a TOML file (see `cyb experiment --help`)"
        )
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from e
    if not cfg.get("runs"):
        raise ValueError(
            f"{path} defines no [[runs]]: add at least one table with a name and a variant"
        )
    return cfg


def apply_overrides(cfg: dict, assignments: list[str]) -> dict:
    """`section.key=value` (or `key=value` for [defaults]) with TOML values: tokens=200000, eval.max_chars=0."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: a string
        section, _, name = key.strip().rpartition(".")
        if not section and name in ("out", "db"):
            cfg[name] = value
        elif section in ("", "defaults", "eval", "grid"):
            cfg.setdefault(section or "defaults", {})[name] = value
        else:
            raise ValueError(
                f"--set {key}: use KEY (a [defaults] setting), eval.KEY, grid.KEY, out or db"
            )
    return cfg


def jobs(cfg: dict) -> list[Job]:
    """Expand the grid into jobs; every TrainConfig is validated here, before anything runs."""
    out = Path(cfg.get("out", "runs/experiment"))
    defaults, grid, ev = cfg.get("defaults", {}), cfg.get("grid", {}), cfg.get("eval", {})
    known = {f.name for f in fields(TrainConfig)}
    result = []
    for spec in cfg["runs"]:
        spec = dict(spec)
        name = spec.pop("name", None)
        if not name or not _NAME.match(name):
            raise ValueError(
                f"every [[runs]] needs a name of letters, digits, '-', '_' or '.'; got {name!r}"
            )
        modes = tuple(spec.pop("modes", ev.get("modes", ["dense"])))
        for mode in modes:
            try:
                parse_mode(mode)
            except ValueError as e:
                raise ValueError(f"run {name}: {e}") from None
        seeds = spec.pop("seeds", None)
        regimes = spec.pop("regimes", grid.get("regimes", ["1x1"]))
        merged = {**defaults, **spec}
        unknown = set(merged) - known - {"out"}
        if unknown:
            raise ValueError(f"run {name}: unknown setting(s) {', '.join(sorted(unknown))}")
        merged["w"] = variants.resolve_w(merged.get("variant", "baseline"), merged.get("w", 1))
        for regime in regimes:
            if regime not in REGIMES:
                raise ValueError(
                    f"unknown data regime {regime!r}; choose from {', '.join(REGIMES)}"
                )
            budget_x, data_x = REGIMES[regime]
            for seed in seeds or grid.get("seeds", [merged.get("seed", 0)]):
                run = f"{name}-{regime}-s{seed}"
                run_id = f"{out.name}.{run}"  # unique across experiments sharing one database
                base = TrainConfig(**{**merged, "out": str(out / run), "seed": seed})
                tc = replace(base, tokens=base.tokens * budget_x, data_tokens=base.tokens * data_x)
                result.append(Job(run_id, tc, modes))
    ids = [j.run_id for j in result]
    if len(set(ids)) != len(ids):
        raise ValueError("two [[runs]] share a name: give each a distinct name")
    return result


def run(
    cfg: dict, db: str | Path | None = None, progress: bool = True, only: str | None = None
) -> Iterator[dict]:
    """Train and evaluate what is missing; yields one status row per job and mode as each finishes."""
    db = store.default_db_path(db, cfg.get("db"))
    rank, world, local_rank = env_world()
    # ranks share a machine's GPUs; on a CPU-only machine every rank trains on the CPU
    gpu = world > 1 and torch.cuda.is_available()
    device = f"cuda:{local_rank}" if gpu else None
    if gpu:  # kernels and caches of this rank on its own GPU, not all on GPU 0
        torch.cuda.set_device(local_rank)
    ev = cfg.get("eval", {})
    split, max_docs, max_chars = (
        ev.get("split", "heldout"),
        ev.get("max_docs") or None,
        ev.get("max_chars") or None,
    )
    todo = [
        job
        for i, job in enumerate(jobs(cfg))
        if i % world == rank and not (only and not re.search(only, job.run_id))
    ]
    # every check that can fail runs before the first training: the database, the eval split
    store.check_database(db)
    store.upgrade(db)  # an older schema: readers (the done-checks below) need the current one
    datasets = {
        root: load_docs(split, None, root, max_docs, max_chars)[0]
        for root in {ev.get("root", job.config.data_root) for job in todo}
    }
    for job in todo:
        tc = replace(job.config, device=device) if device else job.config
        trained = (Path(tc.out) / "final" / "summary.json").exists()
        Path(tc.out).mkdir(parents=True, exist_ok=True)
        record_run_id(tc.out, job.run_id)  # before training: a partial run has its id too
        summary = train(tc, progress=progress)
        root = ev.get("root", tc.data_root)
        dataset = datasets[root]
        for mode in job.modes:
            eval_id = store.make_eval_id(job.run_id, dataset, mode)
            done = store.eval_summary(db, eval_id) is not None
            if not done:
                kind, pauses = parse_mode(mode)
                run_eval(
                    tc.out,
                    split=split,
                    mode=kind,
                    pauses=pauses,
                    seed=tc.seed,  # shuffled: the permutation's seed is the run's
                    db=db,
                    root=root,
                    run_id=job.run_id,
                    max_docs=max_docs,
                    max_chars=max_chars,
                    seq_len=tc.seq_len,
                    batch_size=ev.get("batch_size", 16),  # windows per forward (not results)
                    device=str(resolve_device(tc.device)),
                    progress=progress,
                    parallel=False,  # the ranks split the grid, not one evaluation
                )
            yield {
                "run_id": job.run_id,
                "mode": mode,
                "eval_id": eval_id,
                "trained_now": not trained,
                "evaluated_now": not done,
                "val_ppl": summary["val"]["ppl"],
                **store.eval_summary(db, eval_id),
            }
