"""A training run survives a kill at any phase of a save, and a torn log line.

The kill is injected at each named phase of `atomic_save_dir` (not at random): a hook raises
a BaseException there, which unwinds without running any cleanup, so the disk is left as a
SIGKILL would leave it. The resumed run must reach byte-identical weights to an uninterrupted one.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from support import ROOT

from cyb_core import atomic
from cyb_core import train as train_lib
from cyb_core.train import train
from cyb_core.train_config import TrainConfig


def config(out, **kw) -> TrainConfig:
    base = dict(
        out=str(out),
        init="scratch:tiny",
        tokenizer=str(ROOT / "data" / "tokenizer"),
        data_root=str(ROOT / "data" / "fixture"),
        split="finetune",
        variant="cyb-ap",
        w=3,
        recipe="variable",
        hparams={"omega": "1:1:2"},
        seq_len=16,
        batch_size=4,
        tokens=16 * 4 * 4,  # 4 steps: checkpoints after steps 2 and 4, then final/
        lr=3e-3,
        eval_every=2,
        ckpt_every=2,
        val_blocks=4,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


class Killed(BaseException):
    """Not an Exception: nothing on the way out catches it, as nothing runs after a SIGKILL."""


def kill_at(target: str, nth: int, phase: str):
    """A phase hook that stops the nth save of `target` (ckpt or final) at `phase`.

    "mid-write" stops after the temporary folder was written and removes one of its files,
    the state a kill inside write() leaves; "removing-old" removes one file of the old copy
    first, the state a kill inside its rmtree leaves.
    """
    seen = {"n": 0}
    hook_phase = {"mid-write": "written"}.get(phase, phase)

    def hook(name: str, path: Path):
        if path.name != target or name != hook_phase:
            return
        seen["n"] += 1
        if seen["n"] != nth:
            return
        if phase == "mid-write":
            next(p for p in path.with_name(path.name + ".tmp").iterdir() if p.is_file()).unlink()
        if phase == "removing-old":
            next(p for p in path.with_name(path.name + ".old").iterdir() if p.is_file()).unlink()
        raise Killed(f"{target} save {nth} at {phase}")

    return hook


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    summary = train(config(out), progress=False)
    return out, summary


def leftovers(run: Path) -> list[str]:
    return sorted(
        p.name for p in run.iterdir() if p.name.startswith(("ckpt", "final.")) or ".part" in p.name
    )


CASES = [
    # the second checkpoint (step 4, the last step): an older ckpt/ exists, so every phase counts
    *[
        ("ckpt", 2, p)
        for p in ("mid-write", "written", "renamed-old", "renamed-new", "removing-old")
    ],
    # the first checkpoint: nothing to move aside
    ("ckpt", 1, "mid-write"),
    ("ckpt", 1, "renamed-new"),
    # final/, then ckpt/ is removed
    ("final", 1, "mid-write"),
    ("final", 1, "renamed-new"),
    ("final", 1, "done"),
]


def expected_resume_step(target: str, nth: int, phase: str) -> int:
    """The valid checkpoint after the kill: the new one once it is renamed into place."""
    new_in_place = phase in ("renamed-new", "removing-old", "done")
    if target == "final":
        return 4
    return 2 * nth if new_in_place else 2 * (nth - 1)


@pytest.mark.parametrize("target,nth,phase", CASES)
def test_kill_at_every_phase_of_a_save_then_resume_is_byte_identical(
    target, nth, phase, reference, tmp_path, monkeypatch
):
    ref_dir, ref_summary = reference
    run = tmp_path / "run"
    cfg = config(run)
    monkeypatch.setattr(atomic, "_phase_hook", kill_at(target, nth, phase))
    with pytest.raises(Killed):
        train(cfg, progress=False)
    final_in_place = target == "final" and phase in ("renamed-new", "done")
    assert (run / "final" / "summary.json").exists() == final_in_place
    if final_in_place:
        assert (run / "ckpt").exists()  # killed before the checkpoint was removed
    monkeypatch.setattr(atomic, "_phase_hook", None)

    resumed_from = []  # the step of the checkpoint the second run starts from (0: from scratch)
    load = train_lib._load_model

    def spy(cfg, ckpt):
        state = torch.load(ckpt / "state.pt", weights_only=True) if ckpt else {"step": 0}
        resumed_from.append(state["step"])
        return load(cfg, ckpt)

    monkeypatch.setattr(train_lib, "_load_model", spy)
    summary = train(cfg, progress=False)
    assert resumed_from == [expected_resume_step(target, nth, phase)] or (
        final_in_place and resumed_from == []  # final/ was complete: nothing to train
    )
    got = (run / "final" / "model.safetensors").read_bytes()
    assert got == (ref_dir / "final" / "model.safetensors").read_bytes()
    assert summary["final_loss"] == ref_summary["final_loss"]
    assert leftovers(run) == []  # no ckpt/, ckpt.old (21 MB on the real model) or tmp folders
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, cfg.steps + 1))


def test_a_stale_non_empty_ckpt_old_does_not_block_resume(reference, tmp_path):
    """The reported failure: `OSError: [Errno 39] Directory not empty: ckpt -> ckpt.old`."""
    run = tmp_path / "run"
    cfg = config(run)
    assert train(cfg, progress=False, stop_after=2) == {"stopped_at": 2}
    shutil.copytree(run / "ckpt", run / "ckpt.old")  # a kill in the removal left it behind
    (run / "ckpt.tmp").mkdir()
    (run / "ckpt.tmp" / "half").write_bytes(b"\0" * 10)
    train(cfg, progress=False)
    assert (run / "final" / "model.safetensors").read_bytes() == (
        reference[0] / "final" / "model.safetensors"
    ).read_bytes()
    assert leftovers(run) == []


def test_a_torn_last_log_line_is_dropped_on_resume(reference, tmp_path):
    run = tmp_path / "run"
    cfg = config(run)
    train(cfg, progress=False, stop_after=2)
    with (run / "log.jsonl").open("a") as f:
        f.write('{"step": 3, "tokens_se')  # killed mid-write
    summary = train(cfg, progress=False)
    assert summary["final_loss"] == reference[1]["final_loss"]
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, cfg.steps + 1))


def _fill(content: str):
    def write(tmp: Path):
        tmp.mkdir()
        (tmp / "a").write_text(content)
        (tmp / "b").write_text(content)

    return write


@pytest.mark.parametrize(
    "state,expected",
    [
        # (what exists: path, path.old, path.tmp) -> content of path after recover_dir
        ({"path": "new", "old": "old", "tmp": None}, "new"),
        ({"path": "new", "old": "partial", "tmp": None}, "new"),
        ({"path": None, "old": "old", "tmp": "new"}, "old"),
        ({"path": "old", "old": None, "tmp": "partial"}, "old"),
        ({"path": None, "old": None, "tmp": "partial"}, None),
    ],
)
def test_recover_dir_keeps_the_one_valid_copy(state, expected, tmp_path):
    path = tmp_path / "ckpt"
    for key, name in (("path", "ckpt"), ("old", "ckpt.old"), ("tmp", "ckpt.tmp")):
        if state[key] is not None:
            _fill(state[key])(tmp_path / name)
            if state[key] == "partial":
                (tmp_path / name / "b").unlink()
    assert atomic.recover_dir(path) == (expected is not None)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["ckpt"] if expected else [])
    if expected:
        assert (path / "a").read_text() == (path / "b").read_text() == expected


def test_atomic_save_dir_replaces_over_a_stale_old_copy(tmp_path):
    path = tmp_path / "d"
    atomic.atomic_save_dir(path, _fill("one"))
    _fill("stale")(tmp_path / "d.old")  # left by a kill in an earlier removal
    atomic.atomic_save_dir(path, _fill("two"))
    assert (path / "a").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
