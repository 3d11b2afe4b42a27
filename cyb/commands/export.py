"""`cyb export`: query results, raw rows, CoNLL-U or Table 3 from the store, into --out or
standard output."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cyb_core.names import EVAL_MODES

from ..flags import DEFAULT, add_db, add_int, add_out, add_seed
from ..parser import CLIError, progress, require

TABLE_KINDS = {
    "tokens": "raw token rows of the evaluation",
    "words": "the spaCy words of the evaluated text",
    "token-stats": "per token type: count, mean/median/variance of pauses",
    "quadrants": "Table 3 as rows: low/high median x low/high variance",
    "pause-rates": "mean pauses per group (--by) with 95% bootstrap CIs",
    "contrast": "two groups of one evaluation (--groups A B): difference, CI, Cohen's d",
    "compare": "per group, --against run minus --run-id: difference, CI, Cohen's d",
    "calibration": "Spearman of d_i with t_{i+1} - t_i per step",
    "density": "2D histogram of (d_i, t_{i+1} - t_i) for --step",
    "histogram": "distribution of pauses per token",
    "steps": "mean of s over tokens (answer after 0..W-1 pauses)",
    "kwic": "every occurrence of --token with context and pauses",
    "runs": "perplexity, positions per token and mean pauses per evaluation",
    "train-log": "training curves (all runs, or --run-id)",
}
KINDS = {
    **TABLE_KINDS,
    "conllu": "CoNLL-U with spaCy tags and pauses in MISC",
    "table3": "the paper's Table 3 as Markdown or LaTeX",
}
HELP = "export query results, raw rows, CoNLL-U or Table 3"
DESCRIPTION = (
    "Export from the DuckDB store into --out (files never leave it), or with "
    "--out - to standard output. Kinds: " + "; ".join(f"{k}: {v}" for k, v in KINDS.items()) + "."
)
# the stored names of the modes: uniform with K pauses is stored as uniformK
MODE_NAMES = ", ".join(m for m in EVAL_MODES if m != "uniform") + " or uniformK"
# the numeric flags that count something (at least 1)
COUNTS = ("min_count", "top", "width", "limit", "bins", "boot")


def register(subparsers) -> None:
    x = subparsers.add_parser("export", help=HELP, description=DESCRIPTION)
    kinds = "what to export: " + ", ".join(KINDS)
    x.add_argument("kind", choices=list(KINDS), metavar="KIND", help=kinds)
    add_out(x, "directory the export is written into; - writes it to standard output")
    x.add_argument("--out-dir", dest="out", help=argparse.SUPPRESS)  # the old name
    name = "file name inside --out (default: derived from the kind and evaluation)"
    x.add_argument("--name", help=name)
    x.add_argument(
        "--format",
        choices=["csv", "parquet", "conllu", "markdown", "latex"],
        help="csv|parquet for tables (default csv, tokens/words: parquet), markdown|latex for table3",
    )
    add_db(x)
    x.add_argument("--run-id", help="run id of the evaluation (see the `runs` export)")
    x.add_argument("--run", dest="run_id", help=argparse.SUPPRESS)  # the old name
    x.add_argument("--dataset", help="dataset of the evaluation, when the run has several")
    x.add_argument("--mode", help=f"mode of the evaluation, when the run has several: {MODE_NAMES}")
    x.add_argument("--against", help="compare: the second run id (same --dataset/--mode)")
    _register_query_flags(x)
    x.set_defaults(func=run)


def _register_query_flags(x) -> None:
    measure = "pause count: expected, greedy, or observed (adaptive)"
    measures = ["expected", "greedy", "observed"]
    x.add_argument("--measure", default="expected", choices=measures, help=measure + DEFAULT)
    by = "grouping for pause-rates/contrast/compare"
    groups = ["upos", "tag", "number", "word_start", "contraction"]
    x.add_argument("--by", default="upos", choices=groups, help=by + DEFAULT)
    contrast = "contrast: the two groups, e.g. NN NNS"
    x.add_argument("--groups", nargs=2, metavar=("A", "B"), help=contrast)
    add_int(x, "--min-count", 20, "minimum occurrences per token type or group")
    add_int(x, "--top", 10, "quadrants/table3: token types per quadrant")
    x.add_argument("--token", help="kwic: the token, surrounding spaces ignored")
    add_int(x, "--width", 40, "kwic: context characters each side")
    add_int(x, "--limit", 1000, "kwic: at most this many rows")
    add_int(x, "--bins", 30, "histogram/density: bins")
    add_int(x, "--step", 0, "density: the step i")
    add_int(x, "--boot", 1000, "bootstrap resamples")
    add_seed(x, "bootstrap seed")


def _frame(con, args, eval_id):
    from analysis import queries as q

    kind = args.kind
    if kind == "contrast" and not args.groups:
        raise CLIError("contrast needs --groups A B, e.g. --by tag --groups NN NNS")
    if kind == "compare" and not args.against:
        raise CLIError("compare needs --against RUN")
    if kind == "kwic" and not args.token:
        raise CLIError("kwic needs --token")
    if kind == "compare":
        from analysis.store import find_eval, require_eval

        info = require_eval(con, eval_id)
        other = find_eval(con, args.against, info["dataset"], info["mode"])
        return q.compare_runs(
            con, eval_id, other, args.by, args.measure, args.min_count, args.boot, args.seed
        )
    m, n = args.measure, args.min_count
    queries = {
        "token-stats": lambda: q.token_stats(con, eval_id, m, n),
        "quadrants": lambda: q.token_quadrants(con, eval_id, m, n, args.top),
        "pause-rates": lambda: q.pause_rates(con, eval_id, args.by, m, n, args.boot, args.seed),
        "contrast": lambda: q.contrast(
            con, eval_id, args.by, *args.groups, m, args.boot, args.seed
        ),
        "calibration": lambda: q.calibration(con, eval_id),
        "density": lambda: q.calibration_density(con, eval_id, args.step, args.bins),
        "histogram": lambda: q.pause_histogram(con, eval_id, m, args.bins),
        "steps": lambda: q.step_distribution(con, eval_id),
        "kwic": lambda: q.kwic(con, eval_id, token=args.token, width=args.width, limit=args.limit),
        "runs": lambda: q.run_summary(con, args.dataset, args.mode),
        "train-log": lambda: q.training_curves(con, [args.run_id] if args.run_id else None),
    }
    if kind not in queries:
        raise CLIError(f"unknown kind {kind}")
    return queries[kind]()


def check_args(args, fmt: str) -> None:
    """Refuse flags that cannot work together, before the database is opened."""
    if not args.out:
        raise CLIError("export needs --out DIR (or --out - for standard output)")
    if args.out == "-" and fmt == "parquet":
        raise CLIError(
            f"{args.kind} as parquet is binary: give --format csv with --out -, or a folder"
        )
    for flag in COUNTS:
        if getattr(args, flag) < 1:
            name = "--" + flag.replace("_", "-")
            raise CLIError(f"{name} must be at least 1, got {getattr(args, flag)}")
    if args.step < 0:
        raise CLIError(f"--step must be at least 0, got {args.step}")


def run(args) -> None:
    require("duckdb", "pyarrow")
    import duckdb

    from analysis import export
    from analysis.store import StoreError, reading, reading_quietly

    fmt = args.format or {
        "conllu": "conllu",
        "table3": "markdown",
        "tokens": "parquet",
        "words": "parquet",
    }.get(args.kind, "csv")
    check_args(args, fmt)
    to_stdout = args.out == "-"
    if not to_stdout:
        export.check_out_dir(args.out)  # before any query: a read-only folder fails first
    tmp = tempfile.TemporaryDirectory(prefix="cyb-export-") if to_stdout else None
    # DuckDB draws its progress bar on the terminal: never into an export on standard output
    opener = reading_quietly if to_stdout or not progress(args) else reading
    try:
        with opener(args.db) as con:
            path = _write(con, args, fmt, tmp.name if tmp else args.out)
        if to_stdout:  # written whole by the same writers, then copied out
            sys.stdout.buffer.write(Path(path).read_bytes())
            sys.stdout.flush()
            return
    except duckdb.Error as e:
        raise StoreError(f"query failed: {str(e).splitlines()[0]}") from e
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"wrote {path}", file=sys.stdout)


def _write(con, args, fmt: str, out_dir: str):
    """The export of `args.kind` written into `out_dir`; returns its path."""
    from analysis import export
    from analysis.store import find_eval

    kind, eval_id = args.kind, None
    if kind not in ("runs", "train-log"):
        if not args.run_id:
            raise CLIError(
                f"{kind} needs --run-id RUN (and --dataset/--mode if the run has several evaluations)"
            )
        eval_id = find_eval(con, args.run_id, args.dataset, args.mode)
    if kind == "conllu":
        if fmt != "conllu":
            raise CLIError(f"conllu exports as conllu, not {fmt}")
        return export.export_conllu(con, eval_id, out_dir, args.name)
    if kind == "table3":
        return export.export_table3(
            con,
            eval_id,
            out_dir,
            args.name,
            fmt,
            measure=args.measure,
            min_count=args.min_count,
            top=args.top,
        )
    if kind in ("tokens", "words"):
        return export.export_rows(con, eval_id, out_dir, args.name, fmt, table=kind)
    if fmt not in export.TABLE_FORMATS:
        raise CLIError(f"{kind} exports as csv or parquet, not {fmt}")
    df = _frame(con, args, eval_id)
    name = args.name or f"{kind}-{export.safe_name(eval_id or 'all')}"
    return export.export_frame(df, out_dir, name, fmt)
