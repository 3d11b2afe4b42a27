"""The one bfloat16 autocast switch for every forward pass (training, evaluation, generation)."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when `bf16`, else a no-op context.

    Callers decide where bf16 applies: training and dense evaluation pass `bf16 and the
    device is CUDA` (on a CPU it is slower than float32), generation honours --bf16 anywhere.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
