"""The `cyb` command: the root parser over every layer's subcommands, and one-line errors.

Each layer registers its own subcommands (cyb_core.cli, analysis.cli, app.cli). This module
adds `experiment`, which needs all of them, and `generate`, which is a script over the engine;
it turns errors the user can fix into one line `cyb COMMAND: error: ...` with exit status 1
(cyb/errors.py says which are, library errors included; anything else keeps its traceback).
Building the parser imports no torch, DuckDB or Streamlit: commands import those when they run.
"""

from __future__ import annotations

import argparse
import json
import sys

from analysis.cli import add_cli as add_analysis_cli
from app.cli import add_cli as add_app_cli
from cyb_core.cli import CLIError, Parser
from cyb_core.cli import add_cli as add_core_cli
from cyb_core.errors import read_user_text
from cyb_core.names import GENERATION_READOUTS, RECIPES

EXPERIMENT_DB_HELP = "DuckDB file (default: $CYB_DB, else the config's db, else data/cyb.duckdb)"


def cmd_experiment(args):
    from analysis.cli import EVAL_NEEDS
    from cyb_core.cli import require

    require(*EVAL_NEEDS)
    from . import experiment

    cfg = experiment.apply_overrides(experiment.load_config(args.config), args.set or [])
    if args.list:
        jobs = experiment.jobs(cfg)
        if args.json:
            print(json.dumps({"jobs": [experiment.job_row(j) for j in jobs]}))
            return
        for job in jobs:
            print(
                f"{job.run_id}: {job.config.variant} w={job.config.w} tokens={job.config.tokens} "
                f"data_tokens={job.config.data_tokens} modes={','.join(job.modes)}"
            )
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


def add_experiment_cli(sub) -> None:
    """Register `experiment` on the `cyb` subparsers."""
    x = sub.add_parser(
        "experiment",
        help="run a grid of trainings and evaluations from a TOML config",
        description="Train and evaluate every run of a TOML grid (variants x data regimes x seeds), "
        "skipping what is complete and resuming what was interrupted; results go to DuckDB. "
        "See cyb/experiment.py and configs/ for the format.",
    )
    x.add_argument("config", help="TOML file describing the grid")
    x.add_argument("--db", help=EXPERIMENT_DB_HELP)
    x.add_argument("--only", help="regular expression: run only the jobs whose run id matches")
    x.add_argument("--list", action="store_true", help="print the jobs and exit")
    x.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout at the end ({config, evaluations: [one row per "
        "run and mode]}; with --list: {jobs}) instead of a line per evaluation",
    )
    x.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a setting without editing the file, e.g. --set tokens=200000 --set w=4 "
        "--set init=runs/other/final --set eval.max_chars=0 --set grid.seeds=[0,1,2] (repeatable)",
    )
    x.set_defaults(func=cmd_experiment)


def add_generate_cli(subparsers) -> None:
    """Register `generate` on the `cyb` subparsers."""
    g = subparsers.add_parser(
        "generate",
        help="generate text from a checkpoint, with pauses",
        description="Continue prompts with a checkpoint, batched, with a KV cache. Recipe 1 (constant) feeds "
        "W-1 pauses after every token; Recipe 2 (variable) feeds a pause only when the model asks for one.",
    )
    g.add_argument(
        "checkpoint", help="checkpoint directory (written by `cyb train` or save_pretrained)"
    )
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--prompt", action="append", help="prompt text; repeat the flag for several prompts"
    )
    src.add_argument("--prompt-file", help="file with one prompt per line; - reads standard input")
    src.add_argument("--prompts", dest="prompt_file", help=argparse.SUPPRESS)  # the old name
    g.add_argument(
        "--recipe",
        choices=RECIPES,
        help="pauses after every token or when asked (default: the checkpoint's)",
    )
    g.add_argument(
        "--w",
        type=int,
        help="steps per token (1 + pauses), overriding the checkpoint's; needed for a plain "
        "save_pretrained model, which has no CYB settings and otherwise runs with w=1",
    )
    g.add_argument(
        "--psi",
        type=float,
        help="DK prior psi' in (0, 1), overriding the checkpoint's (default: its own, else 0.9)",
    )
    g.add_argument(
        "--allow-resize",
        action="store_true",
        help="let a tokenizer much larger than the model's embeddings (over 1,000 rows or "
        "10%% more) grow them; without it such a checkpoint is refused",
    )
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=64,
        help="tokens to generate per prompt (default: %(default)s)",
    )
    g.add_argument(
        "--readout",
        choices=GENERATION_READOUTS,
        default="greedy",
        help="answer at the first step with d < 0.5 (greedy), d < --dk-threshold, or draw DK with "
        "probability d (sample) (default: %(default)s)",
    )
    g.add_argument(
        "--dk-threshold",
        type=float,
        default=0.5,
        help="threshold on d for --readout threshold (default: %(default)s)",
    )
    g.add_argument(
        "--sample", action="store_true", help="sample tokens instead of taking the most likely one"
    )
    g.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)"
    )
    g.add_argument("--top-k", type=int, help="sample among the k most likely tokens only")
    g.add_argument(
        "--top-p", type=float, help="sample from the smallest set holding this probability mass"
    )
    g.add_argument(
        "--min-p",
        type=float,
        help="sample only tokens at least this fraction as likely as the likeliest one",
    )
    g.add_argument(
        "--repetition-penalty",
        type=float,
        help="above 1 discourages tokens already in the prompt or output (1: none)",
    )
    g.add_argument(
        "--truncate",
        action="store_true",
        help="cut prompts too long for the model's context (with --max-new-tokens) from the "
        "left, with a note on stderr (default: refuse them)",
    )
    g.add_argument(
        "--stop", action="append", help="stop string, cut from the output; repeat for several"
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for sampling tokens and pauses (default: %(default)s)",
    )
    g.add_argument(
        "--show-pauses",
        action="store_true",
        help="print the pause count after each token, e.g. cat[2]",
    )
    g.add_argument(
        "--batch-size", type=int, default=16, help="prompts per batch (default: %(default)s)"
    )
    g.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)"
    )
    g.add_argument("--bf16", action="store_true", help="autocast the forward passes to bfloat16")
    g.set_defaults(func=cmd_generate)


def check_generate_args(args) -> None:
    """Refuse numeric options that cannot work, before anything is loaded."""
    positive = {
        "--max-new-tokens": args.max_new_tokens,
        "--batch-size": args.batch_size,
        "--top-k": args.top_k,
        "--w": args.w,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise CLIError(f"{flag} must be at least 1, got {value}")
    if args.temperature <= 0:
        raise CLIError(f"--temperature must be above 0, got {args.temperature:g}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise CLIError(f"--top-p must be in (0, 1], got {args.top_p:g}")
    if not 0.0 <= args.dk_threshold <= 1.0:
        raise CLIError(f"--dk-threshold must be in [0, 1], got {args.dk_threshold:g}")
    if args.psi is not None and not 0.0 < args.psi < 1.0:
        raise CLIError(f"--psi must be in (0, 1), got {args.psi:g}")
    if args.min_p is not None and not 0.0 <= args.min_p <= 1.0:
        raise CLIError(f"--min-p must be in [0, 1], got {args.min_p:g}")
    if args.repetition_penalty is not None and not args.repetition_penalty > 0:
        raise CLIError(f"--repetition-penalty must be above 0, got {args.repetition_penalty:g}")


def cmd_generate(args) -> None:
    from cyb_core import model as model_lib
    from cyb_core.engine import generate
    from cyb_core.train import resolve_device

    check_generate_args(args)  # every check before the model is loaded
    if args.prompt_file:
        src = args.prompt_file
        text = read_user_text(src, what="prompt file", error=CLIError)
        prompts = [line for line in text.splitlines() if line.strip()]
        if not prompts:
            raise ValueError(
                f"no prompts in {'standard input' if src == '-' else src}: give one per line"
            )
    else:
        prompts = args.prompt
    overrides = {k: v for k, v in (("w", args.w), ("psi", args.psi)) if v is not None}
    model = model_lib.load(
        args.checkpoint,
        device=resolve_device(args.device),
        allow_resize=args.allow_resize,
        **overrides,
    )
    from cyb_core import variants

    variants.get(model.settings.variant)  # a checkpoint naming an unknown variant is refused
    notes = model_lib.settings_notes(model, w_given=args.w is not None)
    if args.show_pauses and model.settings.w == 1:
        notes.append("w=1 leaves no room for pauses: --show-pauses prints [0] after every token")
    from cyb_core import tokenizer as tok_lib
    from cyb_core.engine import fit_prompts

    # every prompt is checked against the context before anything is generated
    enc = tok_lib.encode(model.tokenizer, prompts)
    _, cut = fit_prompts(model, enc, args.max_new_tokens, args.truncate)
    notes += [
        f"prompt {i + 1} lost its first {c} of {len(enc[i])} tokens to fit the model's context "
        f"({model.max_positions} positions) with --max-new-tokens {args.max_new_tokens}"
        for i, c in enumerate(cut)
        if c
    ]
    for note in notes:
        print(f"cyb generate: warning: {note}", file=sys.stderr)
    kw = dict(
        recipe=args.recipe or model.settings.recipe,
        max_new_tokens=args.max_new_tokens,
        readout=args.readout,
        dk_threshold=args.dk_threshold,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        do_sample=args.sample,
        stop=args.stop,
        seed=args.seed,
        bf16=args.bf16,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        truncate=args.truncate,
    )
    for i in range(0, len(prompts), args.batch_size):
        for g in generate(model, prompts[i : i + args.batch_size], **kw):
            print(g.prompt + g.render(args.show_pauses), end="\n\n" if len(prompts) > 1 else "\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cyb")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


NO_PROGRESS_HELP = "no progress bars (also accepted before the command: cyb --no-progress ...)"


def _add_no_progress(parser) -> None:
    """Give every (sub)command `--no-progress`. Its default is SUPPRESS, so an absent flag
    leaves the root parser's value, and `cyb --no-progress eval ...` reaches the command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_no_progress(sub)
    if "--no-progress" not in parser._option_string_actions:
        parser.add_argument(
            "--no-progress", action="store_true", default=argparse.SUPPRESS, help=NO_PROGRESS_HELP
        )


def build_parser() -> Parser:
    parser = Parser(
        prog="cyb",
        description="Self-paced language models: Catch Your Breath losses, pause-aware inference and analysis.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars, in any command"
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        parser_class=Parser,
        metavar="COMMAND",
        help="run `cyb COMMAND --help` for its flags",
    )
    add_core_cli(sub)  # data, tokenizer, pretrain, train
    add_experiment_cli(sub)
    add_analysis_cli(sub)  # eval, export
    add_generate_cli(sub)
    add_app_cli(sub)
    add_lm_eval_cli(sub)
    for command in sub.choices.values():
        _add_no_progress(command)
    return parser


LM_EVAL_HELP = (
    "EleutherAI's lm-evaluation-harness with the pause-aware `cyb` model type: every argument "
    "goes to lm-eval's own command line, e.g. `cyb lm-eval --model cyb --model_args "
    "pretrained=runs/x/final,w=4,mode=dense --tasks T` (docs/own-model-and-corpus.md)"
)


def add_lm_eval_cli(sub) -> None:
    """List `lm-eval` in `cyb --help`; main() hands its arguments to lm-eval untouched."""
    sub.add_parser("lm-eval", help=LM_EVAL_HELP, description=LM_EVAL_HELP, add_help=False)


def cmd_lm_eval(args: list[str]) -> int:
    from cyb_core.cli import require

    require("lm_eval")
    from cyb_core.lm_eval import cli

    return cli(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # lm-eval parses its own arguments, --help included
        return _run("lm-eval", lambda: cmd_lm_eval(argv[1:]))
    args = build_parser().parse_args(argv)
    # the command as typed, for the one-line messages: `cyb data import`, not `cyb data`
    command = " ".join(filter(None, [args.command, getattr(args, "data_command", None)]))
    return _run(command, lambda: args.func(args))


def _run(command: str, fn) -> int:
    """fn() with the errors a user can fix as one line `cyb COMMAND: error: ...`, exit 1."""
    try:
        code = fn()
    except KeyboardInterrupt:
        print(
            f"cyb {command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as e:
        from .errors import user_message  # after parsing: --help does not need it

        message = user_message(e)
        if message is None:
            raise  # a bug, not bad input: keep the traceback
        print(f"cyb {command}: error: {message}", file=sys.stderr)
        return 1
    return code if type(code) is int else 0
