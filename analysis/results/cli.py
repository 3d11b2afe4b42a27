"""docs/results.md from the paper-comparison runs (configs/paper/*.toml) and, for section 10, the
waiting experiments (configs/waiting/*.toml).

    python -m analysis.results collect   # run directories + DuckDB -> compact Parquet in docs/results/data
    python -m analysis.results render    # Parquet -> docs/results.md and docs/results/fig-*.png
    python -m analysis.results           # both
    python -m analysis.results collect --waiting-only   # only the waiting-* experiments
    python -m analysis.results collect --frontier-only  # only the frontier-* experiments (section 11)

`collect` needs the runs and the evaluation database (the waiting ones, runs/waiting-* and
data/waiting.duckdb, are read when they are there); `render` needs only the committed Parquet
files, so the document and its figures can be rebuilt from a clean clone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .collect import collect
from .data import DATA_DIR, DOC, ResultsError
from .document import render
from .experiment import update
from .frontier import tables as frontier_tables
from .waiting import tables as waiting_tables

WAITING_DBS = Path("data")  # where the waiting experiments' databases are looked for


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m analysis.results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=["collect", "render", "all"], default="all")
    p.add_argument(
        "--runs",
        type=Path,
        default=Path("runs"),
        help="root of the run directories (default: runs)",
    )
    p.add_argument("--db", type=Path, default=Path("data/paper.duckdb"), help="evaluation database")
    p.add_argument(
        "--waiting-db",
        type=Path,
        action="append",
        help="database of waiting experiments for section 10, repeatable (default: every "
        "data/waiting*.duckdb; none there is skipped with a note)",
    )
    p.add_argument(
        "--waiting-root",
        type=Path,
        default=Path("runs"),
        help="root of the waiting-* experiment directories (default: %(default)s)",
    )
    p.add_argument(
        "--waiting-only",
        action="store_true",
        help="collect only the waiting experiments, keeping the other tables in --data",
    )
    p.add_argument(
        "--frontier-db",
        type=Path,
        action="append",
        help="database of frontier experiments for section 11, repeatable (default: every "
        "data/frontier*.duckdb)",
    )
    p.add_argument(
        "--frontier-only",
        action="store_true",
        help="collect only the frontier experiments, keeping the other tables in --data",
    )
    p.add_argument(
        "--data", type=Path, default=DATA_DIR, help="compact results data (default: %(default)s)"
    )
    p.add_argument("--doc", type=Path, default=DOC, help="document to write (default: %(default)s)")
    p.add_argument(
        "--no-figures", action="store_true", help="skip the PNG figures (they need Chromium)"
    )
    args = p.parse_args(argv)
    dbs = (
        args.waiting_db
        if args.waiting_db is not None
        else sorted(WAITING_DBS.glob("waiting*.duckdb"))
    )
    try:
        if args.action in ("collect", "all") and args.frontier_only:
            fdbs = args.frontier_db or sorted(WAITING_DBS.glob("frontier*.duckdb"))
            print(f"collected {update(args.data, 'frontier', frontier_tables(None, fdbs))}")
        elif args.action in ("collect", "all") and args.waiting_only:
            waiting = waiting_tables(args.waiting_root, dbs)
            print(f"collected {update(args.data, 'waiting', waiting)}")
        elif args.action in ("collect", "all"):
            waiting = {"waiting_root": args.waiting_root, "waiting_dbs": dbs}
            print(f"collected {collect(args.runs, args.db, args.data, **waiting)}")
        if args.action in ("render", "all"):
            print(f"wrote {render(args.data, args.doc, figures=not args.no_figures)}")
    except (ResultsError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
