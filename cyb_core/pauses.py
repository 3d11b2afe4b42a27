"""Pause insertion (docs/method.md section 4): Recipe 1 (constant) and Recipe 2 (variable).

Real token x_t becomes x_t, <pause_1>, ..., <pause_k>: k = W-1 in Recipe 1, k ~ omega in
Recipe 2. Pauses take the position id of the token they follow. The loss reads the model's
logits as (B, T, W, V): step 0 of token t is x_t itself, step i its i-th pause, and every
step predicts x_{t+1}. Nothing here knows about tokenizers: ids come in as arguments.

Targets (B, T) are the inputs shifted by one: targets[:, t] = x_{t+1}, -100 at the last
position and wherever x_t or x_{t+1} is padding. Packed rows ("concatenate then split",
documents separated by an end-of-text id) need nothing special: positions continue and the
end-of-text token predicts the next document's first token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cyb_core.losses import IGNORE_INDEX, VectorSpec, device_constant, parse_vector


@dataclass(frozen=True)
class Expanded:
    input_ids: Tensor  # (B, L) real tokens each followed by their pauses; pad_id on added padding
    position_ids: Tensor  # (B, L) index among the row's real tokens (pauses share it); 0 on pad
    attention_mask: Tensor  # (B, L) long, 1 on real tokens and their pauses
    real_index: Tensor  # (B, L) t of the real token a position belongs to; -1 on added padding
    step: Tensor  # (B, L) 0 on the real token, i on its i-th pause; -1 on added padding
    steps: Tensor  # (B, T) positions per token = 1 + pauses (the loss's `steps`)
    gather_index: Tensor  # (B, T, W) position of step i of token t; last used step repeated
    targets: Tensor  # (B, T) next real token, see the module docstring
    labels: Tensor  # (B, L) targets[real_index]: every step predicts x_{t+1}; -100 on padding
    constant: bool  # Recipe 1 layout: L = T * W and position t * W + i is step i of token t

    def to_steps(self, x: Tensor) -> Tensor:
        """(B, L, ...) model outputs -> (B, T, W, ...); a view for Recipe 1, a gather otherwise."""
        B, T, W = self.gather_index.shape
        if self.constant:
            return x.unflatten(1, (T, W))
        rows = torch.arange(B, device=x.device)[:, None, None]
        return x[rows, self.gather_index]


def _expand(
    input_ids: Tensor,
    slots: Tensor,
    W: int,
    pause_ids: Sequence[int],
    attention_mask: Tensor | None,
    pad_id: int,
    constant: bool,
    *,
    length: int | None = None,
) -> Expanded:
    """Give token t of each row slots[b, t] consecutive positions (B, T) -> (B, max row length).

    `length`: the longest row (sum of slots), when the caller knows it on the host; else it is
    read from `slots` (one CPU-GPU sync when they live on a GPU). Nothing here indexes with a
    boolean mask (a hidden `nonzero`, a sync): a constant layout is a reshape, a variable one
    a scatter whose unused (token, step) slots land in a scratch column that is cut off.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got {tuple(input_ids.shape)}")
    if W < 1 or len(pause_ids) < W - 1 or len(set(pause_ids[: W - 1])) != W - 1:
        raise ValueError(
            f"need W >= 1 and W - 1 = {W - 1} distinct pause ids, got {list(pause_ids)}"
        )
    B, T = input_ids.shape
    dev = input_ids.device
    real = (
        torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.bool()
    )
    i = torch.arange(W, device=dev)
    start = slots.cumsum(1) - slots  # (B, T) first position of token t
    if constant:
        L = T * W
    elif length is not None:
        L = length
    else:
        L = int(slots.sum(1).max()) if T else 0  # CPU-GPU sync when slots live on a GPU
    gather_index = start[..., None] + torch.minimum(i, slots[..., None] - 1)  # (B, T, W)
    if constant:  # every (token, step) is used, in order: (B, T, W) -> (B, T * W) is a reshape

        def scatter(values: Tensor, fill: int) -> Tensor:  # (B|1, T|1, W|1) -> (B, L)
            return values.expand(B, T, W).reshape(B, L).long()

    else:
        used = i < slots[..., None]  # (B, T, W)
        # unused slots go to scratch column L, cut off below; used ones are distinct
        cols = torch.where(used, gather_index, L).view(B, T * W)

        def scatter(values: Tensor, fill: int) -> Tensor:  # (B|1, T|1, W|1) -> (B, L)
            out = torch.full((B, L + 1), fill, dtype=torch.long, device=dev)
            out.scatter_(1, cols, values.expand(B, T, W).reshape(B, T * W).long())
            return out[:, :L]

    pause_table = device_constant((0, *pause_ids[: W - 1]), input_ids.dtype, dev)  # (W,)
    keep = (i == 0) | ~real[..., None]  # (B, T, W) the token itself; padding stays padding
    ids = torch.where(keep, input_ids[..., None], pause_table)
    position = (real.long().cumsum(1) - 1) * real  # (B, T) counts real tokens only
    targets = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)
    targets[:, :-1] = torch.where(real[:, :-1] & real[:, 1:], input_ids[:, 1:].long(), IGNORE_INDEX)
    real_index = scatter(torch.arange(T, device=dev)[None, :, None], -1)
    labels = torch.where(real_index >= 0, targets.gather(1, real_index.clamp_min(0)), IGNORE_INDEX)
    return Expanded(
        input_ids=scatter(ids, pad_id).to(input_ids.dtype),
        position_ids=scatter(position[..., None], 0),
        attention_mask=scatter(real[..., None], 0),
        real_index=real_index,
        step=scatter(i, -1),
        steps=slots,
        gather_index=gather_index,
        targets=targets,
        labels=labels,
        constant=constant,
    )


def expand_constant(
    input_ids: Tensor, W: int, pause_ids: Sequence[int], attention_mask: Tensor | None = None
) -> Expanded:
    """Recipe 1: W - 1 pauses after every token, (B, T) -> (B, T * W); padding gets W slots too."""
    slots = torch.full_like(input_ids, W, dtype=torch.long)
    return _expand(input_ids, slots, W, pause_ids, attention_mask, pad_id=0, constant=True)


def expand_with_counts(
    input_ids: Tensor,
    W: int,
    pause_ids: Sequence[int],
    counts: Tensor,
    attention_mask: Tensor | None = None,
    pad_id: int = 0,
) -> Expanded:
    """Recipe 2 with the pauses already drawn: counts[b, t] in 0..W-1 pauses after token t.

    Counts drawn on the CPU (as `expand_variable` and the trainer draw them) are checked and
    summed there, before they move: the expanded length is then known on the host and nothing
    here waits for the GPU. Counts already on a GPU are taken as they are (one sync for the
    length).
    """
    if counts.shape != input_ids.shape:
        raise ValueError(
            f"counts must have the shape of input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(counts.shape)}"
        )
    slots = counts.long() + 1
    length = None
    if slots.device.type == "cpu":
        if slots.numel() and (slots.min() < 1 or slots.max() > W):  # host tensors: no sync
            raise ValueError(f"pause counts must be in 0..{W - 1}")
        if attention_mask is None or attention_mask.device.type == "cpu":
            real = slots if attention_mask is None else torch.where(attention_mask.bool(), slots, 1)
            length = int(real.sum(1).max()) if real.numel() else 0
    slots = slots.to(input_ids.device)
    if attention_mask is not None:
        slots = torch.where(attention_mask.bool(), slots, 1)
    return _expand(
        input_ids, slots, W, pause_ids, attention_mask, pad_id, constant=False, length=length
    )


def expand_variable(
    input_ids: Tensor,
    W: int,
    pause_ids: Sequence[int],
    omega: VectorSpec,
    generator: torch.Generator | None = None,
    attention_mask: Tensor | None = None,
    pad_id: int = 0,
) -> Expanded:
    """Recipe 2: k ~ omega (over 0..W-1) pauses after each real token, none after padding.

    Rows are right-padded with pad_id (attention 0) to the longest row. Sampling runs on the
    CPU, so `generator` is a CPU generator and a seed gives the same counts on any device.
    """
    om = parse_vector(omega, W)
    B, T = input_ids.shape
    k = torch.multinomial(om, B * T, replacement=True, generator=generator).view(B, T)
    return expand_with_counts(input_ids, W, pause_ids, k, attention_mask, pad_id)
