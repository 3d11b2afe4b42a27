"""`cyb generate`: continue prompts with a checkpoint, batched, with a KV cache and pauses."""

from __future__ import annotations

import argparse
import sys

from cyb_core.errors import read_user_text
from cyb_core.names import GENERATION_READOUTS

from ..flags import (
    DEFAULT,
    add_allow_resize,
    add_device,
    add_dk_threshold,
    add_float,
    add_int,
    add_psi,
    add_recipe,
    add_seed,
    add_w,
)
from ..parser import CLIError

HELP = "generate text from a checkpoint, with pauses"
DESCRIPTION = (
    "Continue prompts with a checkpoint, batched, with a KV cache. Recipe 1 (constant) feeds "
    "W-1 pauses after every token; Recipe 2 (variable) feeds a pause only when the model asks for one."
)

READOUT_HELP = (
    "answer at the first step with d < 0.5 (greedy), d < --dk-threshold, or draw DK with "
    "probability d (sample)"
)
TRUNCATE_HELP = (
    "cut prompts too long for the model's context (with --max-new-tokens) from the "
    "left, with a note on stderr (default: refuse them)"
)


def register(subparsers) -> None:
    g = subparsers.add_parser("generate", help=HELP, description=DESCRIPTION)
    ckpt = "checkpoint directory (written by `cyb train` or save_pretrained)"
    g.add_argument("checkpoint", help=ckpt)
    src = g.add_mutually_exclusive_group(required=True)
    prompt = "prompt text; repeat the flag for several prompts"
    src.add_argument("--prompt", action="append", help=prompt)
    src.add_argument("--prompt-file", help="file with one prompt per line; - reads standard input")
    src.add_argument("--prompts", dest="prompt_file", help=argparse.SUPPRESS)  # the old name
    add_recipe(g, "pauses after every token or when asked (default: the checkpoint's)")
    add_w(g)
    add_psi(g, "DK prior psi' in (0, 1), overriding the checkpoint's (default: its own, else 0.9)")
    add_allow_resize(g)
    add_int(g, "--max-new-tokens", 64, "tokens to generate per prompt")
    readout = READOUT_HELP + DEFAULT
    g.add_argument("--readout", choices=GENERATION_READOUTS, default="greedy", help=readout)
    add_dk_threshold(g, "threshold on d for --readout threshold")
    _register_sampling(g)
    g.add_argument("--truncate", action="store_true", help=TRUNCATE_HELP)
    stop = "stop string, cut from the output; repeat for several"
    g.add_argument("--stop", action="append", help=stop)
    add_seed(g, "seed for sampling tokens and pauses")
    shows = "print the pause count after each token, e.g. cat[2]"
    g.add_argument("--show-pauses", action="store_true", help=shows)
    add_int(g, "--batch-size", 16, "prompts per batch")
    add_device(g)
    g.add_argument("--bf16", action="store_true", help="autocast the forward passes to bfloat16")
    g.set_defaults(func=run)


def _register_sampling(g) -> None:
    sample = "sample tokens instead of taking the most likely one"
    g.add_argument("--sample", action="store_true", help=sample)
    add_float(g, "--temperature", 1.0, "sampling temperature")
    g.add_argument("--top-k", type=int, help="sample among the k most likely tokens only")
    top_p = "sample from the smallest set holding this probability mass"
    g.add_argument("--top-p", type=float, help=top_p)
    min_p = "sample only tokens at least this fraction as likely as the likeliest one"
    g.add_argument("--min-p", type=float, help=min_p)
    penalty = "above 1 discourages tokens already in the prompt or output (1: none)"
    g.add_argument("--repetition-penalty", type=float, help=penalty)


def check_args(args) -> None:
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


def _prompts(args) -> list[str]:
    if not args.prompt_file:
        return args.prompt
    src = args.prompt_file
    text = read_user_text(src, what="prompt file", error=CLIError)
    prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(
            f"no prompts in {'standard input' if src == '-' else src}: give one per line"
        )
    return prompts


def run(args) -> None:
    from cyb_core import model as model_lib
    from cyb_core.distributed import resolve_device

    check_args(args)  # every check before the model is loaded
    prompts = _prompts(args)
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
    _generate(model, prompts, args)


def _generate(model, prompts: list[str], args) -> None:
    from cyb_core.engine import generate

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
