"""`cyb experiment CONFIG`: train and evaluate every run of a TOML grid (cyb/experiment.py)."""

from __future__ import annotations

import json

from ..flags import add_db, add_json
from ..parser import EVAL_NEEDS, require

HELP = "run a grid of trainings and evaluations from a TOML config"
DESCRIPTION = (
    "Train and evaluate every run of a TOML grid (variants x data regimes x seeds), "
    "skipping what is complete and resuming what was interrupted; results go to DuckDB. "
    "See cyb/experiment.py and configs/ for the format."
)

DB_HELP = "DuckDB file (default: $CYB_DB, else the config's db, else data/cyb.duckdb)"


def register(subparsers) -> None:
    x = subparsers.add_parser("experiment", help=HELP, description=DESCRIPTION)
    x.add_argument("config", help="TOML file describing the grid")
    add_db(x, DB_HELP)
    x.add_argument("--only", help="regular expression: run only the jobs whose run id matches")
    x.add_argument("--list", action="store_true", help="print the jobs and exit")
    add_json(
        x,
        "print one JSON object on stdout at the end ({config, evaluations: [one row per "
        "run and mode]}; with --list: {jobs}) instead of a line per evaluation",
    )
    x.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a setting without editing the file, e.g. --set tokens=200000 --set w=4 "
        "--set init=runs/other/final --set eval.max_chars=0 --set grid.seeds=[0,1,2] (repeatable)",
    )
    x.set_defaults(func=run)


def run(args):
    require(*EVAL_NEEDS)
    from .. import experiment

    cfg = experiment.apply_overrides(experiment.load_config(args.config), args.set or [])
    if args.list:
        _list(experiment, cfg, args.json)
        return
    rows = []
    for row in experiment.run(cfg, db=args.db, only=args.only, progress=not args.no_progress):
        rows.append(row)
        if args.json:
            continue
        print(
            f"{row['eval_id']}: perplexity {row['ppl']:.2f}, mean expected pauses {row['mean_expected_pauses']:.3f} "
            f"(validation slice {row['val_ppl']:.2f})"
            f"{' (trained now)' if row['trained_now'] else ''}{' (evaluated now)' if row['evaluated_now'] else ''}",
            flush=True,
        )
    if args.json:
        print(json.dumps({"config": args.config, "evaluations": rows}, default=str))


def _list(experiment, cfg: dict, as_json: bool) -> None:
    jobs = experiment.jobs(cfg)
    if as_json:
        print(json.dumps({"jobs": [experiment.job_row(j) for j in jobs]}))
        return
    for job in jobs:
        print(
            f"{job.run_id}: {job.config.variant} w={job.config.w} tokens={job.config.tokens} "
            f"data_tokens={job.config.data_tokens} modes={','.join(job.modes)}"
        )
