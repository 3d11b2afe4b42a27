"""docs/architecture.md checks its own claims: every `$ command` line of its ```sh blocks runs
here, from the repository root, and must print exactly the lines written under it (in any
order; nothing written: it must print nothing). A layer that starts importing upwards, a second
home for a concept or a module past 400 lines fails this test, not a reader's trust."""

from __future__ import annotations

import re
import subprocess

import pytest
from support import ROOT

DOC = ROOT / "docs" / "architecture.md"


def claims() -> list[tuple[str, list[str]]]:
    found = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S):
        for part in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, *expected = part.rstrip("\n").split("\n")
            found.append((command, expected))
    return found


def test_the_document_has_its_checks():
    assert len(claims()) >= 6


@pytest.mark.parametrize(("command", "expected"), claims(), ids=[c for c, _ in claims()])
def test_claim(command, expected):
    r = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True)
    assert r.stderr == "", r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(expected), r.stdout
