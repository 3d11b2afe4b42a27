"""The `cyb` command: the root parser over every layer's subcommands, and one-line errors.

Each layer registers its own subcommands (cyb_core.cli, analysis.cli, app.cli). This module
adds `experiment`, which needs all of them, and `generate`, which is a script over the engine;
it turns errors the user can fix into one line `cyb COMMAND: error: ...` with exit status 1.
Building the parser imports no torch, DuckDB or Streamlit: commands import those when they run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from analysis.cli import add_cli as add_analysis_cli
from app.cli import add_cli as add_app_cli
from cyb_core.cli import CLIError, Parser
from cyb_core.cli import add_cli as add_core_cli
from cyb_core.names import GENERATION_READOUTS, RECIPES

EXPERIMENT_DB_HELP = "DuckDB file (default: $CYB_DB, else the config's db, else data/cyb.duckdb)"


def cmd_experiment(args):
    from . import experiment

    cfg = experiment.apply_overrides(experiment.load_config(args.config), args.set or [])
    if args.list:
        for job in experiment.jobs(cfg):
            print(
                f"{job.run_id}: {job.config.variant} w={job.config.w} tokens={job.config.tokens} "
                f"data_tokens={job.config.data_tokens} modes={','.join(job.modes)}"
            )
        return
    for row in experiment.run(cfg, db=args.db, only=args.only):
        print(
            f"{row['eval_id']}: perplexity {row['ppl']:.2f}, mean expected pauses {row['mean_expected_pauses']:.3f} "
            f"(validation slice {row['val_ppl']:.2f})"
            f"{' (trained now)' if row['trained_now'] else ''}{' (evaluated now)' if row['evaluated_now'] else ''}",
            flush=True,
        )


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
    src.add_argument("--prompts", help="file with one prompt per line")
    g.add_argument(
        "--recipe",
        choices=RECIPES,
        help="pauses after every token or when asked (default: the checkpoint's)",
    )
    g.add_argument("--w", type=int, help="override the checkpoint's steps per token (1 + pauses)")
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


def cmd_generate(args) -> None:
    from cyb_core import model as model_lib
    from cyb_core.engine import generate
    from cyb_core.train import resolve_device

    if args.prompts:
        prompts = [line for line in Path(args.prompts).read_text().splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"no prompts in {args.prompts}")
    else:
        prompts = args.prompt
    model = model_lib.load(
        args.checkpoint, device=resolve_device(args.device), **({"w": args.w} if args.w else {})
    )
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
    )
    for i in range(0, len(prompts), args.batch_size):
        for g in generate(model, prompts[i : i + args.batch_size], **kw):
            print(g.prompt + g.render(args.show_pauses), end="\n\n" if len(prompts) > 1 else "\n")


def build_parser() -> Parser:
    parser = Parser(
        prog="cyb",
        description="Self-paced language models: Catch Your Breath losses, pause-aware inference and analysis.",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cyb_core.corpus import CorpusError  # after parsing: --help does not need it

    try:
        args.func(args)
    except KeyboardInterrupt:
        print(
            f"cyb {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except (
        CLIError,
        ValueError,
        FileNotFoundError,
        CorpusError,
    ) as e:  # StoreError is a ValueError
        print(
            f"cyb {args.command}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            file=sys.stderr,
        )
        return 1
    return 0
