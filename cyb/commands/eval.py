"""`cyb eval`: evaluate a run or checkpoint and store its per-token results (analysis.evaluation)."""

from __future__ import annotations

import json

from cyb_core.names import EVAL_MODES

from ..flags import (
    DEFAULT,
    W_HELP,
    add_allow_resize,
    add_data_root,
    add_db,
    add_device,
    add_dk_threshold,
    add_float,
    add_int,
    add_json,
    add_no_progress,
    add_psi,
    add_seed,
    add_w,
)
from ..parser import EVAL_NEEDS, progress, require

HELP = "evaluate a run or checkpoint and store per-token results in DuckDB"

DESCRIPTION = (
    "Evaluate a run directory or checkpoint on a corpus split or a UTF-8 text file, in dense mode "
    "(Recipe 1: W-1 pauses after every token, one parallel pass) or adaptive mode (Recipe 2: pauses taken only "
    "when the model asks). Tags the text with spaCy, aligns it to model tokens by character offsets and writes "
    "everything to DuckDB in one transaction: an interrupted run leaves nothing behind; re-running replaces "
    "the earlier result of the same run, dataset and mode."
)
TARGET_HELP = (
    "run directory (runs/NAME), checkpoint directory, or a run id the database knows "
    "(evaluated from its stored checkpoint)"
)
MODE_HELP = (
    "dense (Recipe 1: W-1 pauses after every token), adaptive (Recipe 2: a pause while "
    "the model says don't-know), shuffled (the run's stored adaptive pause counts permuted "
    "within each document, seeded by --seed: the placement control) or uniform (--pauses K "
    "after every token, read out at step K; stored as uniformK)"
)


def register(subparsers) -> None:
    e = subparsers.add_parser("eval", help=HELP, description=DESCRIPTION)
    e.add_argument("target", metavar="CHECKPOINT_OR_RUN", help=TARGET_HELP)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--split", help="corpus split to evaluate, e.g. heldout")
    text = "UTF-8 text file to evaluate (one document); - reads standard input"
    src.add_argument("--text", help=text)
    e.add_argument("--mode", default="dense", choices=EVAL_MODES, help=MODE_HELP + DEFAULT)
    pauses = "with --mode uniform: pauses after every token, 0..W-1"
    e.add_argument("--pauses", type=int, metavar="K", help=pauses)
    add_db(e)
    add_data_root(e)
    _register_names(e)
    add_int(e, "--seq-len", 128, "real tokens per window")
    add_int(e, "--batch-size", 16, "windows per forward pass")
    add_w(e, W_HELP + " (the default run id then ends in .wW)")
    add_allow_resize(e)
    psi = "DK prior psi' in (0, 1), overriding the checkpoint's (the default run id then "
    add_psi(e, psi + "ends in .psiPSI)")
    add_dk_threshold(e, "adaptive: pause while d_i >= this")
    sample = "adaptive: draw DK with probability d_i instead of thresholding it"
    e.add_argument("--sample-dk", action="store_true", help=sample)
    add_seed(e, "adaptive: seed for sampled pauses; shuffled: seed of the permutation")
    add_device(e)
    lock = "seconds to wait for readers to release the database before giving up"
    add_float(e, "--lock-timeout", 120.0, lock)
    add_json(e)
    add_no_progress(e, "no progress bars")
    e.set_defaults(func=run)


def _register_names(e) -> None:
    run_id = "name of the run in the database (default: the run or checkpoint directory name)"
    e.add_argument("--run-id", help=run_id)
    dataset = "name of the dataset in the database (default: the split, or text/FILE)"
    e.add_argument("--dataset", help=dataset)
    docs = "evaluate only the first N documents (named DATASET.dN)"
    e.add_argument("--max-docs", type=int, help=docs)
    chars = "cut every document to N characters (named DATASET.cN)"
    e.add_argument("--max-chars", type=int, help=chars)


def run(args) -> None:
    require(*EVAL_NEEDS)
    from analysis.evaluation import run_eval
    from cyb_core.distributed import env_world, resolve_device

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
