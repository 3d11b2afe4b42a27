"""`cyb results`: docs/results.md from the paper-comparison runs (configs/paper/*.toml) and, for
section 10, the waiting experiments (configs/waiting/*.toml).

    cyb results collect   # run directories + DuckDB -> compact Parquet in docs/results/data
    cyb results render    # Parquet -> docs/results.md and docs/results/fig-*.png
    cyb results           # both
    cyb results collect --waiting-only   # only the waiting-* experiments
    cyb results collect --frontier-only  # only the frontier-* experiments (section 11)

`collect` needs the runs and the evaluation database (the waiting ones, runs/waiting-* and
data/waiting.duckdb, are read when they are there); `render` needs only the committed Parquet
files, so the document and its figures can be rebuilt from a clean clone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..flags import DEFAULT, add_db

HELP = "collect the experiments and render docs/results.md"

WAITING_DBS = Path("data")  # where the waiting experiments' databases are looked for
WAITING_DB_HELP = (
    "database of waiting experiments for section 10, repeatable (default: every "
    "data/waiting*.duckdb; none there is skipped with a note)"
)
FRONTIER_DB_HELP = (
    "database of frontier experiments for section 11, repeatable (default: every "
    "data/frontier*.duckdb)"
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "results",
        help=HELP,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["collect", "render", "all"],
        default="all",
        help="collect, render, or both (default: %(default)s)",
    )
    runs = "root of the run directories (default: runs)"
    p.add_argument("--runs", type=Path, default=Path("runs"), help=runs)
    add_db(p, "evaluation database", type=Path, default=Path("data/paper.duckdb"))
    p.add_argument("--waiting-db", type=Path, action="append", help=WAITING_DB_HELP)
    waiting = "root of the waiting-* experiment directories"
    p.add_argument("--waiting-root", type=Path, default=Path("runs"), help=waiting + DEFAULT)
    only = "collect only the {} experiments, keeping the other tables in --data"
    p.add_argument("--waiting-only", action="store_true", help=only.format("waiting"))
    p.add_argument("--frontier-db", type=Path, action="append", help=FRONTIER_DB_HELP)
    p.add_argument("--frontier-only", action="store_true", help=only.format("frontier"))
    # defaults: analysis.results.data's DATA_DIR and DOC, read in run() (pandas: not for --help)
    data = "compact results data (default: docs/results/data)"
    p.add_argument("--data", type=Path, help=data)
    p.add_argument("--doc", type=Path, help="document to write (default: docs/results.md)")
    figures = "skip the PNG figures (they need Chromium)"
    p.add_argument("--no-figures", action="store_true", help=figures)
    p.set_defaults(func=run)


def run(args) -> None:
    from analysis.results import collect, frontier, render, waiting
    from analysis.results.data import DATA_DIR, DOC
    from analysis.results.experiment import update

    args.data, args.doc = args.data or DATA_DIR, args.doc or DOC
    dbs = (
        args.waiting_db
        if args.waiting_db is not None
        else sorted(WAITING_DBS.glob("waiting*.duckdb"))
    )
    if args.action in ("collect", "all") and args.frontier_only:
        fdbs = args.frontier_db or sorted(WAITING_DBS.glob("frontier*.duckdb"))
        print(f"collected {update(args.data, frontier.NAME, frontier.tables(None, fdbs))}")
    elif args.action in ("collect", "all") and args.waiting_only:
        tables = waiting.tables(args.waiting_root, dbs)
        print(f"collected {update(args.data, waiting.NAME, tables)}")
    elif args.action in ("collect", "all"):
        kw = {"waiting_root": args.waiting_root, "waiting_dbs": dbs}
        print(f"collected {collect(args.runs, args.db, args.data, **kw)}")
    if args.action in ("render", "all"):
        print(f"wrote {render(args.data, args.doc, figures=not args.no_figures)}")
