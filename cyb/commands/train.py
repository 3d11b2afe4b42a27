"""`cyb train`: fine-tune a checkpoint with one loss variant; the flags it shares with `cyb
pretrain` (`add_train_args`) and the TrainConfig they make (`train_config`)."""

from __future__ import annotations

import json
from pathlib import Path

from cyb_core import variants
from cyb_core.names import TRACKERS

from ..flags import (
    DEFAULT,
    add_allow_resize,
    add_data_root,
    add_device,
    add_float,
    add_int,
    add_json,
    add_out,
    add_psi,
    add_recipe,
    add_seed,
    add_w,
)
from ..parser import CLIError, progress

HELP = "fine-tune with a CYB loss or a baseline"
DESCRIPTION = (
    "Fine-tune a checkpoint with one loss variant on a budget of real tokens. "
    "Re-running the same command resumes an interrupted run."
)

VARIANT_HELP = "loss: " + "; ".join(f"{v.name}: {v.help}" for v in variants.VARIANTS.values())
TRACKER_HELP = (
    "also log loss, learning rate, expected pauses, the halting distribution s per step "
    "and validation perplexity to a tracker, through its own library (pip install "
    "'cyb[NAME]'): tensorboard (event files in OUT/tensorboard), trackio (its local store), "
    "wandb (WANDB_MODE=offline for no network), mlflow (MLFLOW_TRACKING_URI, default OUT/mlflow.db)"
)


def train_config(args, **fixed):
    """TrainConfig from the parsed flags (flag names equal field names) and `fixed` overrides."""
    from dataclasses import fields

    from cyb_core.train_config import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["hparams"] = {
        k: v for k in variants.HPARAMS if (v := getattr(args, k, None)) is not None
    }
    values.update(fixed)
    return TrainConfig(**values)


# the defaults of the flags `cyb pretrain` and `cyb train` share, per command
TRAIN_DEFAULTS = {  # seq_len, batch_size, tokens, lr, warmup, every, split, out, init
    "pretrain": (256, 16, 3_200_000, 2e-3, 0.02, 100, "pretrain", "runs/pretrain", None),
    "train": (128, 32, 300_000, 1e-3, 0.05, 50, "finetune", "runs/run", "data/base"),
}


def add_train_args(p, command: str) -> None:
    """The flags of `command` (pretrain or train) that both commands take, with its defaults."""
    seq_len, batch_size, tokens, lr, warmup, every, split, out, init = TRAIN_DEFAULTS[command]
    add_out(p, "run directory; re-running the same command resumes it" + DEFAULT, default=out)
    if init:
        what = "checkpoint directory to start from, or scratch:<tiny|small|medium>"
        p.add_argument("--init", default=init, help=what + DEFAULT)
    add_data_root(p)
    p.add_argument("--split", default=split, help="corpus split to train on" + DEFAULT)
    data_tokens = "train on only the first N real tokens of the split; 0 = all"
    add_int(p, "--data-tokens", 0, data_tokens)
    add_int(p, "--seq-len", seq_len, "real tokens per sequence")
    add_int(p, "--batch-size", batch_size, "sequences per optimiser step")
    add_int(p, "--grad-accum", 1, "micro-batches per step; batch-size must divide evenly")
    add_int(p, "--tokens", tokens, "budget in real (non-pause) training tokens")
    add_float(p, "--lr", lr, "peak learning rate; warmup then cosine to 1%% of it")
    add_float(p, "--warmup", warmup, "warmup as a fraction of the steps")
    evals = "steps between evaluations on the validation slice"
    add_int(p, "--eval-every", every, evals)
    add_int(p, "--ckpt-every", every, "steps between resumable checkpoints")
    add_seed(p, "seed for data order, init and pause sampling")
    add_device(p)


def register(subparsers) -> None:
    r = subparsers.add_parser("train", help=HELP, description=DESCRIPTION)
    add_train_args(r, "train")
    choices = list(variants.VARIANTS)
    r.add_argument("--variant", default="cyb-ap", choices=choices, help=VARIANT_HELP + DEFAULT)
    w = "steps per real token, 1-8; tbys with P pauses uses P+1; baseline forces 1"
    add_w(r, w + DEFAULT, default=4)
    recipe = "pauses after every token (constant) or sampled from omega (variable)"
    add_recipe(r, recipe + DEFAULT, default="constant")
    add_psi(r, "DK prior psi'" + DEFAULT, default=0.9)
    _register_model_flags(r)
    for name, (kind, text) in variants.HPARAMS.items():
        r.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    _register_scale_flags(r)
    r.add_argument("--report-to", default="none", choices=TRACKERS, help=TRACKER_HELP + DEFAULT)
    add_json(r)
    r.set_defaults(func=run)


def _register_model_flags(r) -> None:
    r.add_argument(
        "--pause-init",
        default="keep",
        choices=["keep", "mean"],
        help="input embeddings of the pause tokens: as in --init, or the mean real-token embedding (default: %(default)s)",
    )
    r.add_argument(
        "--mask-pauses",
        action="store_true",
        help="pause tokens are input only: their logits are -inf, so "
        "the output softmax never pushes their rows (tied to the input embeddings in the shipped models)",
    )


def _register_scale_flags(r) -> None:
    r.add_argument(
        "--grad-ckpt",
        action="store_true",
        help="gradient checkpointing: recompute each decoder layer's activations in the backward "
        "pass, about a third more compute for much less activation memory",
    )
    r.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun, shard parameters, gradients and optimizer state over the processes "
        "(FSDP2) instead of replicating them (DDP), for models that do not fit one device; "
        "resume a run with the same choice (see docs/scaling.md)",
    )
    add_allow_resize(r, "--init's", "mismatch")
    timeout = (
        "under torchrun, how long a process waits for the others at a synchronisation "
        "before the run stops with an error (a hung process ends the run)"
    )
    add_float(r, "--collective-timeout", 300, timeout, metavar="SECONDS")


def run(args):
    from cyb_core.corpus import require_split
    from cyb_core.train import train

    args.w = variants.resolve_w(args.variant, args.w)  # the baseline always uses W = 1
    from cyb_core.trackers import check

    check(args.report_to)  # the tracker's library is installed, before the run folder
    require_split(args.split, args.data_root)  # before the run folder is written
    if not args.collective_timeout > 0:
        raise CLIError(
            f"--collective-timeout must be above 0 seconds, got {args.collective_timeout}"
        )
    from cyb_core.distributed import env_world, is_timeout

    # under torchrun / accelerate launch (RANK, WORLD_SIZE set) the ranks train one run together
    try:
        summary = train(
            train_config(args),
            progress=progress(args),
            parallel=True,
            grad_ckpt=args.grad_ckpt,
            fsdp=args.fsdp,
            collective_timeout=args.collective_timeout,
            report_to=args.report_to,
        )
    except RuntimeError as e:
        if env_world()[1] > 1 and is_timeout(e):
            raise CLIError(
                f"rank {env_world()[0]}: the other processes did not answer within "
                f"--collective-timeout {args.collective_timeout:g} s (one hung or died); the last "
                "checkpoint is kept: run the same command again to resume"
            ) from e
        raise

    if env_world()[0] != 0:  # rank 0 alone reports
        return
    if args.json:
        print(json.dumps({"out": args.out, "final": str(Path(args.out) / "final"), **summary}))
        return
    v = summary["val"]
    print(
        f"run {args.out}: validation perplexity {v['ppl']:.2f}, mean expected pauses {v['expected_pauses']:.3f}, "
        f"final model in {Path(args.out) / 'final'}"
    )
