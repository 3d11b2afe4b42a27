import argparse
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cyb(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "cyb", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    "cmd",
    [
        ["--help"],
        ["pretrain", "--help"],
        ["data", "build", "--help"],
        ["train", "--help"],
        ["tokenizer", "--help"],
    ],
)
def test_help_explains_itself(cmd):
    r = cyb(*cmd)
    assert r.returncode == 0 and "usage: cyb" in r.stdout
    if cmd != ["--help"]:
        assert r.stdout.count("(default:") >= 1


def test_every_flag_has_help():
    from cyb.cli import build_parser

    def walk(parser):
        for action in parser._actions:
            if action.dest != "help" and not action.help:
                yield f"{parser.prog} {action.option_strings or action.dest}"
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    assert list(walk(build_parser())) == []


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["pretrain", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["train", "--variant", "cyb-zz"], 2, "invalid choice"),
        (
            ["train", "--init", "/nonexistent/ckpt", "--out", "{tmp}/run"],
            1,
            "no checkpoint at /nonexistent/ckpt",
        ),
        (["train", "--variant", "cyb-va", "--rho", "1:0:1:1", "--out", "{tmp}/run"], 1, "rho"),
        (["tokenizer", "--data-root", "{tmp}/nothing", "--out", "{tmp}/tok"], 1, "cyb data build"),
    ],
)
def test_bad_input_gives_one_line_error(args, code, needle, tmp_path):
    r = cyb(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == code
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
