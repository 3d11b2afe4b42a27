"""A run directory before and during a run: may it take this run (same config, writable), its
lock (one writer per --out), and its log repaired on resume.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import torch

from .atomic import FolderBusy, atomic_write, exclusive, write_target
from .train_config import TrainConfig, _same_config


def _check_out(out: Path, cfg: TrainConfig, device: torch.device | None = None) -> str | None:
    """Why the run directory cannot take this run, or None; reads and probes, writes nothing."""
    cfg_path = out / "config.json"
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a directory: choose another --out"
    if cfg_path.is_file():
        try:
            stored = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{cfg_path} is not a run config: choose a new --out or delete {out}"
        if not isinstance(stored, dict) or not _same_config(stored, cfg, device):
            return f"{out} holds a run with a different config: choose a new --out or delete {out}"
    probe, problem = write_target(out)
    if problem == "file":
        return f"cannot create {out}: {probe} is a file, not a directory; choose another --out"
    if problem == "read-only":
        return f"cannot write to {probe} (read-only): choose another --out or make it writable"
    return None


def _lock_run(
    out: Path, cfg: TrainConfig, held: ExitStack, device: torch.device | None = None
) -> str | None:
    """Take the run folder's lock for the life of the run (one writer per --out; see
    atomic.exclusive), then check the folder again: a run that ended meanwhile may have left
    another config. The error's text, or None."""
    try:
        held.enter_context(exclusive(out))
    except FolderBusy as e:
        return str(e)
    return _check_out(out, cfg, device)  # the same comparison as before the lock


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so the log has each step once.

    A line torn by a kill mid-write (only the last can be) is not JSON and is dropped too.
    """
    if not path.exists():
        return
    keep = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            keep.append(ln)
    atomic_write(path, lambda p: p.write_text("".join(k + "\n" for k in keep)))
