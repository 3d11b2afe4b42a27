"""The forward pass over real tokens expanded with pauses, and the validation score of packed
blocks: (B, T) real tokens in, per-step logits (B, T, W, V) or the mean -log p(y) out.
"""

from __future__ import annotations

import math

import torch

from . import distributed, losses, pauses, variants
from .precision import autocast
from .train_config import TrainConfig


def step_logits(
    model,
    inputs,
    w,
    recipe="constant",
    omega=None,
    generator=None,
    pause_counts=None,
    forward=None,
    prior=True,
):
    """Expand (B, T) real tokens with pauses and run the model: logits (B, T, W, V), steps (B, T) or None.

    Recipe 2 takes its pauses from `pause_counts` (B, T) when given, else draws them from
    `omega` with `generator`. `forward` is the module to call (a DDP/FSDP wrapper of `model`);
    `model` itself supplies the token ids. prior=False: logits without the DK prior, for a loss
    that adds it in fp32 (losses.compute(..., psi=model.settings.psi)).
    """
    if recipe == "variable" and w > 1:
        if pause_counts is not None:
            ex = pauses.expand_with_counts(
                inputs, w, model.pause_ids, pause_counts, pad_id=model.pad_id
            )
        else:
            ex = pauses.expand_variable(
                inputs, w, model.pause_ids, omega, generator=generator, pad_id=model.pad_id
            )
    else:
        ex = pauses.expand_constant(inputs, w, model.pause_ids)
    logits, _ = (forward or model)(
        ex.input_ids, position_ids=ex.position_ids, attention_mask=ex.attention_mask, prior=prior
    )
    return ex.to_steps(logits), (None if ex.constant else ex.steps)


@torch.no_grad()
def evaluate_nll(
    model, blocks, cfg: TrainConfig, batch_size: int = 16, sharded: bool = False
) -> dict:
    """Mean -log p(y) and mean expected pauses over `blocks` (Recipe 1, the model's own stopping).

    `sharded`: every rank of a process group passes the same `blocks`, scores its contiguous
    share and the sums are all-reduced, so each rank returns the result over all of `blocks`.
    """
    if sharded:
        share = distributed.shard_range(len(blocks), *distributed.rank_world())
        blocks = blocks[share.start : share.stop]
    model.eval()
    how = variants.get(cfg.variant).readout
    sums = torch.zeros(3, dtype=torch.float64, device=model.device)  # nll, expected pauses, n
    for i in range(0, len(blocks), batch_size):
        b = blocks[i : i + batch_size].to(model.device)
        with autocast(model.device, cfg.bf16 and model.device.type == "cuda"):
            logits, _ = step_logits(model, b[:, :-1], cfg.w, prior=False)
        # bf16 logits go in as they are: the loss upcasts a chunk at a time, adds the prior in fp32
        q = losses.step_quantities(logits, b[:, 1:], model.dk_id, psi=model.settings.psi)
        policy = losses.readout(q, how)
        sums[:2] += torch.stack(
            [-losses.log_p(policy).sum(), losses.expected_pauses(policy.log_s).sum()]
        ).double()
        sums[2] += b[:, 1:].numel()  # a host number: no tensor made and copied per batch
    model.train()
    if sharded:
        distributed.all_reduce_sum(sums)
    nll, pauses_sum, n = sums.tolist()  # one CPU-GPU sync
    if not n:
        nan = float("nan")
        return {"nll": nan, "ppl": nan, "expected_pauses": nan}
    return {"nll": nll / n, "ppl": math.exp(nll / n), "expected_pauses": pauses_sum / n}
