"""A run's resumable checkpoint (ckpt/: weights and optimizer state) and final model: written by
rank 0, gathered from every rank first under FSDP, read back to resume.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .atomic import atomic_save_dir


def _full_state_dict(model, fsdp: bool) -> dict | None:
    """Under FSDP the full (unsharded) weights on the CPU, gathered from every rank; else None."""
    if not fsdp:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model.model, options=opts)
    if getattr(model.model.config, "tie_word_embeddings", False):  # saved once, as a plain save
        for key in getattr(model.model, "_tied_weights_keys", None) or ():
            state.pop(key, None)
    return state


def _save_model(model, path: Path, state_dict: dict | None) -> None:
    if state_dict is None:
        model.save(path)
        return
    path.mkdir(parents=True, exist_ok=True)
    model.model.config.cyb = asdict(model.settings)
    model.model.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
    model.tokenizer.save_pretrained(path)


def _save_ckpt(path: Path, model, opt, step: int, elapsed: float, d=None, fsdp=False) -> None:
    """Rank 0 writes the checkpoint (weights + optimizer state); gathers under FSDP first."""
    state_dict, opt_state = _full_state_dict(model, fsdp), None
    if fsdp:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        opt_state = get_optimizer_state_dict(model.model, opt, options=opts)
    if d is not None and not d.main:
        return

    def write(tmp: Path):
        _save_model(model, tmp, state_dict)
        state = {"step": step, "elapsed": elapsed}
        state["opt_full" if fsdp else "opt"] = opt_state if fsdp else opt.state_dict()
        torch.save(state, tmp / "state.pt")

    atomic_save_dir(path, write)


def _load_opt(model, opt, state: dict, fsdp: bool) -> None:
    key = "opt_full" if fsdp else "opt"
    if key not in state:
        raise ValueError(
            "the checkpoint was written "
            + (
                "without --fsdp: resume it without --fsdp"
                if fsdp
                else "with --fsdp: resume it with --fsdp"
            )
        )
    if not fsdp:
        opt.load_state_dict(state["opt"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model.model, opt, state["opt_full"], options=StateDictOptions(full_state_dict=True)
    )
