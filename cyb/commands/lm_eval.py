"""`cyb lm-eval`: EleutherAI's lm-evaluation-harness with the `cyb` model type. Listed in `cyb
--help`; cyb/cli.py main() hands its arguments to lm-eval's own command line untouched."""

from __future__ import annotations

from ..parser import require

HELP = (
    "EleutherAI's lm-evaluation-harness with the pause-aware `cyb` model type: every argument "
    "goes to lm-eval's own command line, e.g. `cyb lm-eval --model cyb --model_args "
    "pretrained=runs/x/final,w=4,mode=dense --tasks T` (docs/own-model-and-corpus.md)"
)


def register(subparsers) -> None:
    subparsers.add_parser("lm-eval", help=HELP, description=HELP, add_help=False)


def run(argv: list[str]) -> int:
    """lm-eval's command line on the raw arguments after `cyb lm-eval`."""
    require("lm_eval")
    from cyb_core.lm_eval import cli

    return cli(argv)
