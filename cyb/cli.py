"""The `cyb` command: the root parser over the commands of cyb/commands/, and `main()`, which
runs one and turns an error the user can fix into one line `cyb COMMAND: error: ...` with exit
status 1 (cyb_core.errors.user_message says which are; anything else keeps its traceback).
Building the parser imports no torch, DuckDB or Streamlit: commands import those when they run.
"""

from __future__ import annotations

import importlib
import sys

from .commands import COMMANDS
from .flags import add_no_progress
from .parser import Parser, add_commands


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cyb")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> Parser:
    parser = Parser(
        prog="cyb",
        description="Self-paced language models: Catch Your Breath losses, pause-aware inference and analysis.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars, in any command"
    )
    sub = add_commands(parser, "command", "run `cyb COMMAND --help` for its flags")
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    for command in sub.choices.values():
        add_no_progress(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # lm-eval parses its own arguments, --help included
        from .commands import lm_eval

        return _run("lm-eval", lambda: lm_eval.run(argv[1:]))
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
        from cyb_core.errors import user_message

        message = user_message(e)
        if message is None:
            raise  # a bug, not bad input: keep the traceback
        print(f"cyb {command}: error: {message}", file=sys.stderr)
        return 1
    return code if type(code) is int else 0
