import argparse
import json
import re
import subprocess
import sys

import pytest
from support import ROOT


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


def _leaf_parsers(parser):
    """Every command parser (cyb train, cyb data import, ...), with its path."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found = list(_leaf_parsers(sub))
                yield from ([(f"{name} {n}", p) for n, p in found] if found else [(name, sub)])


def test_version_is_the_installed_one():
    from importlib.metadata import version

    r = cyb("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cyb {version('cyb')}"


def test_no_progress_is_global_and_accepted_after_every_command():
    from cyb.cli import build_parser

    parser = build_parser()
    leaves = dict(_leaf_parsers(parser))
    assert {"train", "eval", "experiment", "data import", "generate", "export"} <= set(leaves)
    for name, sub in leaves.items():
        action = sub._option_string_actions.get("--no-progress")
        assert action is not None and action.default == argparse.SUPPRESS, name
    argv = ["eval", "runs/x", "--split", "heldout"]
    assert parser.parse_args(argv).no_progress is False
    assert parser.parse_args(["--no-progress", *argv]).no_progress is True
    assert parser.parse_args([*argv, "--no-progress"]).no_progress is True


def test_old_option_names_still_work_hidden():
    from cyb.cli import build_parser

    parser = build_parser()
    a = parser.parse_args(["export", "runs", "--out-dir", "d", "--run", "r"])
    assert (a.out, a.run_id) == ("d", "r")
    a = parser.parse_args(["generate", "ckpt", "--prompts", "p.txt"])
    assert a.prompt_file == "p.txt"
    shown = cyb("export", "--help").stdout + cyb("generate", "--help").stdout
    assert "--out-dir" not in shown and "--run " not in shown and "--prompts" not in shown


def test_a_missing_extra_is_named(monkeypatch, capsys, tmp_path):
    from cyb.cli import main

    monkeypatch.setitem(sys.modules, "duckdb", None)  # find_spec: not installed
    assert main(["eval", str(tmp_path), "--split", "heldout"]) == 1
    assert capsys.readouterr().err.strip() == (
        "cyb eval: error: duckdb is not installed: pip install 'cyb[analysis]' "
        "(or `make install` for everything)"
    )
    monkeypatch.setitem(sys.modules, "streamlit", None)
    assert main(["app"]) == 1 and "pip install 'cyb[app]'" in capsys.readouterr().err


def test_extras_split_the_install_and_dev_holds_everything():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~\[ ]", d)[0] for d in project["dependencies"]}
    assert not core & {"streamlit", "plotly", "kaleido", "duckdb", "pyarrow", "spacy", "rdata"}
    extras = project["optional-dependencies"]
    assert "cyb[all]" in extras["dev"] and "cyb[analysis,app,accelerate]" in extras["all"]
    assert '-e ".[dev]"' in (ROOT / "Makefile").read_text()  # what `make demo` / `make test` run
    from cyb.parser import EXTRA_OF

    named = {re.split(r"[<>=!~\[ ]", d)[0].replace("-", "_") for e in extras.values() for d in e}
    assert set(EXTRA_OF) <= named  # every module the commands check for is in an extra


def test_training_needs_only_the_core(tmp_path):
    """`cyb train --json` with every extra's modules unimportable: the core install trains."""
    blocked = ["streamlit", "plotly", "kaleido", "duckdb", "pyarrow", "spacy", "rdata"]
    code = (
        "import sys\n"
        f"for m in {blocked!r}: sys.modules[m] = None\n"
        "from cyb.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = "--init scratch:tiny --data-root data/fixture --variant baseline --tokens 128 --seq-len 16 --batch-size 4"
    r = subprocess.run(
        [sys.executable, "-c", code, "train", *args.split(), "--out", str(tmp_path / "run")]
        + ["--eval-every", "100", "--device", "cpu", "--no-progress", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # the whole of stdout is one JSON object
    assert summary["steps"] == 2 and summary["final"] == str(tmp_path / "run" / "final")
    assert r.stderr == ""  # --no-progress: no bars
