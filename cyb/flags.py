"""The flags several commands share, each defined once: `add_seed(p, "seed of the split")` gives
a command `--seed` with the type, default and help wording every command uses."""

from __future__ import annotations

import argparse

from cyb_core.names import RECIPES

DEFAULT = " (default: %(default)s)"
DB_HELP = "DuckDB file (default: $CYB_DB, else data/cyb.duckdb)"
DEVICE_HELP = "cpu, cuda, cuda:N or auto" + DEFAULT
JSON_HELP = "print the summary as one JSON object on stdout instead of a line of text"
NO_PROGRESS_HELP = "no progress bars (also accepted before the command: cyb --no-progress ...)"
W_HELP = (
    "steps per token (1 + pauses), overriding the checkpoint's; needed for a plain "
    "save_pretrained model, which has no CYB settings and otherwise runs with w=1"
)


def add_seed(p, what: str) -> None:
    p.add_argument("--seed", type=int, default=0, help=what + DEFAULT)


def add_device(p, default: str = "auto", help: str = DEVICE_HELP, type=None) -> None:
    p.add_argument("--device", default=default, help=help, type=type)


def add_db(p, help: str = DB_HELP, **kw) -> None:
    p.add_argument("--db", help=help, **kw)


def add_json(p, help: str = JSON_HELP) -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_w(p, help: str = W_HELP, **kw) -> None:
    p.add_argument("--w", type=int, help=help, **kw)


def add_psi(p, help: str, **kw) -> None:
    p.add_argument("--psi", type=float, help=help, **kw)


def add_recipe(p, help: str, **kw) -> None:
    p.add_argument("--recipe", choices=RECIPES, help=help, **kw)


def add_allow_resize(p, whose: str = "the model's", what: str = "checkpoint") -> None:
    p.add_argument(
        "--allow-resize",
        action="store_true",
        help=f"let a tokenizer much larger than {whose} embeddings (over 1,000 rows or 10%% more) "
        f"grow them; without it such a {what} is refused",
    )


def add_data_root(p) -> None:
    p.add_argument(
        "--data-root", default="data/corpus", help="directory of the corpus splits" + DEFAULT
    )


def add_out(p, help: str, **kw) -> None:
    p.add_argument("--out", help=help, **kw)


def add_int(p, flag: str, default, what: str, **kw) -> None:
    """An integer flag with a default, e.g. add_int(p, "--batch-size", 16, "prompts per batch")."""
    p.add_argument(flag, type=int, default=default, help=what + DEFAULT, **kw)


def add_float(p, flag: str, default, what: str, **kw) -> None:
    p.add_argument(flag, type=float, default=default, help=what + DEFAULT, **kw)


def add_dk_threshold(p, what: str) -> None:
    add_float(p, "--dk-threshold", 0.5, what)


def add_no_progress(parser, help: str = NO_PROGRESS_HELP) -> None:
    """Give a command and each of its subcommands `--no-progress`. Its default is SUPPRESS, so an
    absent flag leaves the root parser's value, and `cyb --no-progress eval ...` reaches the
    command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                add_no_progress(sub)
    if "--no-progress" not in parser._option_string_actions:
        parser.add_argument(
            "--no-progress", action="store_true", default=argparse.SUPPRESS, help=help
        )
