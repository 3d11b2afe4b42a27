"""`cyb pretrain`: the base model, from scratch, without pauses."""

from __future__ import annotations

from cyb_core.names import MODEL_PRESETS

from ..flags import DEFAULT
from ..parser import progress
from .train import add_train_args, train_config

HELP = "pretrain the base model without pauses"
DESCRIPTION = (
    "Pretrain a small Llama-style decoder from scratch on the pretrain split (no pauses, "
    "plain cross-entropy), measure held-out perplexity and publish it to --base-dir. "
    "Interrupt at any time; the same command resumes."
)


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help=HELP, description=DESCRIPTION)
    add_train_args(p, "pretrain")
    p.add_argument("--tokenizer", default="data/tokenizer", help="tokenizer directory" + DEFAULT)
    sizes = MODEL_PRESETS
    p.add_argument("--preset", default="small", choices=sizes, help="model size" + DEFAULT)
    base = "where the finished base model is published"
    p.add_argument("--base-dir", default="data/base", help=base + DEFAULT)
    p.set_defaults(func=run)


def run(args):
    from cyb_core.corpus import require_split
    from cyb_core.pretrain import pretrain

    cfg = train_config(
        args,
        variant="baseline",
        w=1,
        recipe="constant",
        psi=0.9,
        hparams={},
        init=f"scratch:{args.preset}",
        tokenizer=args.tokenizer,
    )
    for split in (cfg.split, "heldout"):  # before the run folder is written
        require_split(split, cfg.data_root)
    result = pretrain(cfg, base_dir=args.base_dir, progress=progress(args))
    h = result["heldout"]
    print(
        f"base model ({result['n_params'] / 1e6:.1f}M parameters) written to {args.base_dir}: "
        f"held-out perplexity {h['ppl']:.1f} on {result['heldout_tokens']} tokens, "
        f"{result['tokens_seen']} tokens seen in {result['elapsed_s'] / 60:.1f} min"
    )
