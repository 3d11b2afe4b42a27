"""The model as each training step calls it: plain, or wrapped in DDP or FSDP2 over the ranks of
a process group, with activation checkpointing and the gradient sync of accumulated steps.
"""

from __future__ import annotations

from contextlib import nullcontext

from . import distributed
from .precision import fsdp_policy


def _checkpoint_activations(hf_model) -> None:
    """Recompute every decoder layer's activations in the backward pass (non-reentrant: DDP-safe)."""
    kw = {"use_reentrant": False}
    if hasattr(hf_model, "activation_checkpointing_enable"):  # transformers >= 5.x
        hf_model.activation_checkpointing_enable(kw)
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)


def _wrap(model, d: distributed.Dist, fsdp: bool, bf16: bool):
    """The module each training forward pass calls: the model, or DDP / FSDP2 over it."""
    if not d.active:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        policy = fsdp_policy(bf16)
        kw = {"mp_policy": policy} if policy is not None else {}
        # one unit per decoder layer, then the root (embeddings, tied head, final norm)
        for layer in getattr(getattr(model.model, "model", None), "layers", []):
            fully_shard(layer, **kw)
        fully_shard(model.model, **kw)
        return model  # FSDP2 shards in place: the model's own forward gathers the layers
    from torch.nn.parallel import DistributedDataParallel

    ids = [d.device.index] if d.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _sync_gradients(net, model, fsdp: bool, sync: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if fsdp:
        model.model.set_requires_gradient_sync(sync)
        return nullcontext()
    if sync or not hasattr(net, "no_sync"):
        return nullcontext()
    return net.no_sync()
