"""The one bfloat16 policy: autocast for every forward pass, float32 master weights for training.

Training keeps the parameters, their gradients and the optimizer state in float32 (the
"master weights") and runs the forward pass under bf16 autocast: matrix products in bf16, the
loss and its log-space numerics in float32. Gradients are therefore float32 and DDP reduces
them in float32; under FSDP the sharded parameters stay float32, are gathered in bf16 for the
forward pass and gradients reduced in float32 (`fsdp_policy`).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when `bf16`, else a no-op context.

    Callers decide where bf16 applies: training and dense evaluation pass `bf16 and the
    device is CUDA` (on a CPU it is slower than float32), generation honours --bf16 anywhere.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def master_weights(module: torch.nn.Module) -> torch.nn.Module:
    """Cast floating-point parameters and buffers to float32 before training.

    A checkpoint saved in bf16 or fp16 loads in that dtype; stepping an optimizer on bf16
    weights loses updates smaller than 2^-8 of the weight, so the trainer keeps float32 copies
    and leaves the low precision to autocast.
    """
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in module.parameters()):
        module.float()
    return module


def fsdp_policy(bf16: bool):
    """FSDP2 mixed precision: bf16 gathered parameters, float32 gradient reduction; or None."""
    if not bf16:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
