"""The decoding loops of both recipes, over a KV cache, batched and free of host syncs.

Recipe 1 (`_run_constant`): a real token and its W-1 pauses go through the model as one block
of W positions per cached forward call. Recipe 2 (`run_adaptive`): every row advances one
position per call, a pause or its next real token. `Context` holds the cache and the 2-D
attention mask that grows with it; `Out` holds what each row emitted. cyb_core.engine builds
these for generation, cyb_core.adaptive for teacher-forced Recipe 2 evaluation; the engine's
module docstring describes the recipes and readout policies.
"""

from __future__ import annotations

import itertools
import operator

import torch
from torch import Tensor
from transformers import DynamicCache, StopStringCriteria
from transformers.cache_utils import DynamicLayer

from .precision import autocast


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values (B, H, n, D) are views of buffers with room to grow.

    DynamicLayer appends with torch.cat, copying the whole cache on every call: a decoding step
    then costs more the longer the cache, and a Recipe 2 row caches 1 + pauses positions per
    token. Here a step writes its positions in place and the buffers double when full, so a
    step's cost no longer grows with the cache (beyond attention itself).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._bufs: tuple[Tensor, Tensor] | None = None  # (B, H, room, D) each
        self._views: tuple[Tensor, Tensor] | None = None  # the keys and values made here

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.get_seq_length()
        new = n + key_states.shape[-2]
        if not self._ours() or new > self._bufs[0].shape[-2]:  # also after a crop
            room, bufs = max(2 * new, 64), []
            for old, x in ((self.keys, key_states), (self.values, value_states)):
                bufs.append(x.new_empty((*x.shape[:-2], room, x.shape[-1])))
                if n:
                    bufs[-1][..., :n, :] = old
            self._bufs = tuple(bufs)
        k, v = self._bufs
        k[..., n:new, :].copy_(key_states)
        v[..., n:new, :].copy_(value_states)
        self.keys, self.values = self._views = k[..., :new, :], v[..., :new, :]
        return self.keys, self.values

    def _ours(self) -> bool:
        """Whether keys and values are still the views made here (not replaced by a crop)."""
        return self._views is not None and all(
            map(operator.is_, (self.keys, self.values), self._views)
        )

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep batch rows `indices`: copied into new buffers with the same room, so the next
        update writes in place instead of reallocating (DynamicLayer's would copy twice)."""
        if not self._ours():
            return super().batch_select_indices(indices)
        self._bufs = tuple(b.index_select(0, indices) for b in self._bufs)
        n = self.get_seq_length()
        k, v = self._bufs
        self.keys, self.values = self._views = k[..., :n, :], v[..., :n, :]


def growing_cache(config) -> DynamicCache:
    """A DynamicCache for `config` whose full-attention layers are GrowingLayers."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(x) is DynamicLayer else x for x in cache.layers]
    return cache


class Context:
    """A KV cache (growing_cache) and the 2D attention mask (B, past + new) that must grow with it.

    With use_cache=False the whole sequence is kept and recomputed at each call instead (the
    slow reference); either way a call returns the float32 logits of the new positions (of the
    last `keep` of them: the model's head runs on those alone). CYBModel turns the 2-D mask of
    a cached call into the 4-D one, so a decoding step never waits for the GPU.
    """

    def __init__(self, model, use_cache: bool = True, bf16: bool = False):
        self.model, self.use_cache, self.bf16 = model, use_cache, bf16
        self.cache = growing_cache(model.model.config) if use_cache else None
        self.ids = self.pos = self.mask = None

    def __call__(
        self, ids: Tensor, pos: Tensor, valid: Tensor | None = None, keep: int = 0
    ) -> Tensor:
        L = keep or ids.shape[1]
        valid = torch.ones_like(ids) if valid is None else valid.long()
        self.mask = valid if self.mask is None else torch.cat([self.mask, valid], 1)
        if not self.use_cache:
            self.ids = ids if self.ids is None else torch.cat([self.ids, ids], 1)
            self.pos = pos if self.pos is None else torch.cat([self.pos, pos], 1)
            ids, pos = self.ids, self.pos
        kw = {"logits_to_keep": L} if L < ids.shape[1] else {}
        with autocast(self.model.device, self.bf16):
            logits, self.cache = self.model(
                ids,
                position_ids=pos,
                attention_mask=self.mask,
                cache=self.cache,
                use_cache=self.use_cache,
                **kw,
            )
        # fp32 already (CYBModel adds the DK prior in fp32): (B, L, V)
        return logits[:, -L:].float()

    @property
    def can_select(self) -> bool:
        """Whether rows can be dropped: every cache layer is a DynamicLayer (or a subclass),
        which has batch_select_indices; linear-attention and quantized layers may not."""
        return self.cache is None or all(isinstance(x, DynamicLayer) for x in self.cache.layers)

    def select(self, keep: Tensor) -> None:
        """Keep the batch rows `keep` (indices, ascending) of the cache, mask and sequence."""
        self.mask = self.mask[keep]
        if self.cache is not None:
            self.cache.batch_select_indices(keep)
        else:
            self.ids, self.pos = self.ids[keep], self.pos[keep]


class Out:
    """Emitted tokens and pause counts per row, written on the device without syncing.

    The batch shrinks as its rows finish: at a poll where at least a quarter of the rows still
    in the batch are done, they are dropped (from these buffers here, from the loop's state and
    the cache by the loop), so a step no longer computes rows whose output nobody reads. `live`
    holds the row of each position left in the batch; `results()` gives every row's buffers.
    """

    def __init__(self, model, B: int, max_new: int, stop: list[str] | None, every: int):
        dev = model.device
        self.model, self.max_new, self.stop, self.every = model, max_new, stop or [], every
        self.rows = torch.arange(B, device=dev)  # positions in the batch (shrinks with it)
        self.live = torch.arange(B, device=dev)  # the row at each position
        # last column: scratch; unused slots hold DK, which is banned, so the repetition
        # penalty reading them (Picker.history) changes nothing
        self.tokens = torch.full((B, max_new + 1), model.dk_id, device=dev)
        self.pauses = torch.zeros((B, max_new + 1), dtype=torch.long, device=dev)
        self.count = torch.zeros(B, dtype=torch.long, device=dev)
        self.done = torch.zeros(B, dtype=torch.bool, device=dev)
        self._all = (self.tokens, self.pauses, self.count)  # every row's, once rows are dropped
        self.truncated = [0] * B  # prompt tokens cut from the left, per row (set by _start)
        # Matches each row's emitted text ending in a stop string, on the device: no decode.
        self.criteria = StopStringCriteria(model.tokenizer, self.stop) if self.stop else None

    def emit(self, tok: Tensor, pauses: Tensor, mask: Tensor) -> None:
        slot = torch.where(mask, self.count, self.max_new)
        self.tokens[self.rows, slot] = tok
        self.pauses[self.rows, slot] = pauses
        self.count += mask
        self.done |= mask & ((tok == self.model.eot_id) | (self.count >= self.max_new))
        if self.criteria is not None and self.max_new:
            # each row's last L emitted tokens, right-aligned (B, L); before its first token an
            # id past the vocabulary, which the criteria read as matching nothing
            L = min(self.criteria.maximum_token_len, self.max_new)
            idx = self.count[:, None] - L + torch.arange(L, device=tok.device)
            tail = self.tokens.gather(1, idx.clamp_min(0)).masked_fill(idx < 0, _NO_TOKEN)
            self.done |= mask & self.criteria(tail, None)

    def poll(self, step: int, shrink: bool = True) -> Tensor | None:
        """Every `every` steps, one CPU-GPU sync: None to go on as is; else the positions the
        loop keeps (empty: every row is done), the others already dropped here. With `shrink`
        False (a cache that cannot drop rows) only the empty answer is given."""
        if (step + 1) % self.every:
            return None
        B = len(self.done)
        n_done = int(self.done.sum())  # CPU-GPU sync
        if n_done == B:
            return self.rows[:0]
        # a drop copies the cache: worth it once a quarter of the rows are done, so a batch
        # of n rows is copied O(log n) times, not once per row
        if not shrink or not n_done or 4 * n_done < B:
            return None
        keep = (~self.done).nonzero()[:, 0]  # a second sync, once per drop
        self.results()  # every row's buffers up to date, the dropped rows' for good
        for name in ("live", "tokens", "pauses", "count", "done"):
            setattr(self, name, getattr(self, name)[keep])
        self.rows = self.rows[: len(keep)]
        return keep

    def results(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every row's tokens (B, max_new + 1), pauses (B, max_new + 1) and count (B,)."""
        tokens, pauses, count = self._all
        if self.tokens is not tokens:  # rows were dropped: the rest are in the working buffers
            tokens[self.live] = self.tokens
            pauses[self.live] = self.pauses
            count[self.live] = self.count
        return self._all


_NO_TOKEN = 2**62
GPU_POLL_EVERY = 8  # decoding steps between checks that every row is done, off the CPU


def poll_every(device: torch.device, steps_per_token: int = 1) -> int:
    """Steps between `Out.poll` syncs: every step on the CPU (a check costs nothing there);
    elsewhere GPU_POLL_EVERY tokens' worth, each check waiting for the device. A Recipe 2 step
    is one position, and a token takes up to W of them (steps_per_token), so there it is
    GPU_POLL_EVERY * W steps. Rows that are done meanwhile keep stepping, masked, until a poll
    drops them."""
    return 1 if device.type == "cpu" else GPU_POLL_EVERY * steps_per_token


def wants_pause(policy: str, threshold: float, gen: torch.Generator, d: Tensor) -> Tensor:
    """Whether the model asks for a pause at steps with don't-know probabilities d."""
    if policy == "sample":
        return torch.rand(d.shape, generator=gen, device=d.device) < d
    return d >= (0.5 if policy == "greedy" else threshold)


@torch.no_grad()
def _run_constant(model, prompts: list[list[int]], ctx: Context, out: Out, asks, pick):
    """Recipe 1: each emitted token goes back in with its W-1 pauses as one (B, W) block.

    Yields (token, answer step, emitted) per position left in the batch (Out.live: their rows).
    """
    W, dev, B = model.settings.w, model.device, len(prompts)
    pauses = model.pause_ids[: W - 1]
    L = max(len(p) for p in prompts) * W
    ids = torch.full((B, L), model.pad_id)
    pos, valid = torch.zeros((B, L), dtype=torch.long), torch.zeros((B, L), dtype=torch.long)
    for b, p in enumerate(prompts):  # left padding: every row's last block ends at L
        n = len(p) * W
        ids[b, L - n :] = torch.tensor([x for tok in p for x in (tok, *pauses)])
        pos[b, L - n :] = torch.arange(len(p)).repeat_interleave(W)
        valid[b, L - n :] = 1
    logits = ctx(ids.to(dev), pos.to(dev), valid.to(dev), keep=W)  # (B, W, V) last prompt token
    tail = torch.tensor(pauses, dtype=torch.long, device=dev).expand(B, W - 1)
    n_real = torch.tensor([len(p) for p in prompts], device=dev)
    for i in itertools.count():
        d = (logits[..., model.dk_id] - logits.logsumexp(-1)).exp()  # (B, W)
        answer = ~asks(d)
        answer[:, -1] = True  # DK is not allowed at the last step
        S = answer.int().argmax(-1)  # first step that answers
        tok = pick(logits[out.rows, S])
        emitted = ~out.done
        out.emit(tok, S, emitted)
        yield tok, S, emitted
        if i + 1 == out.max_new:  # every row has emitted max_new tokens
            return
        if (keep := out.poll(i, ctx.can_select)) is not None:
            if not len(keep):  # every row is done
                return
            B = len(keep)
            ctx.select(keep)
            tok, n_real, tail = tok[keep], n_real[keep], tail[:B]
        block = torch.cat([tok[:, None], tail], 1)  # (B, W)
        logits = ctx(block, (n_real + i)[:, None].expand(B, W), ~out.done[:, None].expand(B, W))


@torch.no_grad()
def run_adaptive(model, forced: list[list[int]], ctx: Context, out: Out, asks, pick=None, rec=None):
    """Recipe 2: one position per row per step; real tokens come from `forced` while it lasts.

    With `pick`, each row then generates; without, the row is done once the last forced
    token has been answered (teacher-forced evaluation: forced[t + 1] is the target of step t).
    `rec` (cyb_core.adaptive's recorder) is told every step's quantities, per position left in
    the batch; its `rows` (the recorder's row at each position) loses the rows Out.poll drops.
    """
    W, dev, B = model.settings.w, model.device, len(forced)
    n = torch.tensor([len(f) for f in forced], device=dev)
    T = max(len(f) for f in forced)
    seq = torch.full(
        (B, T + 1), model.pad_id, dtype=torch.long
    )  # column T: pad, never read as a target
    for b, f in enumerate(forced):
        seq[b, : len(f)] = torch.tensor(f)
    seq = seq.to(dev)
    inputs = torch.tensor([model.pad_id, *model.pause_ids[: W - 1]], device=dev)  # input at pause k
    rows = out.rows
    t = torch.zeros(B, dtype=torch.long, device=dev)  # current real token (its position id)
    k = torch.zeros_like(t)  # pauses taken after it so far
    cur = seq[:, 0].clone()
    for step in itertools.count():
        z = ctx(torch.where(k > 0, inputs[k], cur)[:, None], t[:, None], ~out.done[:, None])[
            :, 0
        ]  # (B, V)
        d = (z[:, model.dk_id] - z.logsumexp(-1)).exp().masked_fill(k == W - 1, 0.0)
        answer = ~(asks(d) & (k < W - 1)) & ~out.done
        has_next = t + 1 < n
        nxt = seq[rows, (t + 1).clamp_max(T)]
        if rec is not None:
            rec.step(t, k, d, z.log_softmax(-1), nxt, answer, out.done)
        if pick is not None:
            nxt = torch.where(has_next, nxt, pick(z))
        else:
            out.done |= answer & (t + 2 >= n)  # the last target has been answered
        emitted = answer & ~has_next
        out.emit(nxt, k, emitted)
        yield nxt, k, emitted
        cur = torch.where(answer, nxt, cur)
        t = t + answer.long()
        k = torch.where(answer | out.done, 0, k + 1)
        if (keep := out.poll(step, ctx.can_select)) is not None:
            if not len(keep):  # every row is done
                return
            ctx.select(keep)
            n, seq, t, k, cur = (x[keep] for x in (n, seq, t, k, cur))
            rows = out.rows
            if rec is not None:
                rec.rows = rec.rows[keep]


@torch.no_grad()
def constant_teacher_forced(
    model,
    ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    bf16: bool = False,
    use_cache: bool = True,
) -> Tensor:
    """Recipe 1 logits (B, T, W, V) of right-padded ids (B, T), one W-block per cached call."""
    W, (B, T) = model.settings.w, ids.shape
    ids = ids.to(model.device)
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(model.device)
    tail = torch.tensor(model.pause_ids[: W - 1], dtype=ids.dtype, device=ids.device).expand(
        B, W - 1
    )
    ctx = Context(model, use_cache, bf16)
    steps = [
        ctx(
            torch.cat([ids[:, t : t + 1], tail], 1),
            torch.full((B, W), t, device=ids.device),
            mask[:, t : t + 1].expand(B, W),
        )
        for t in range(T)
    ]
    return torch.stack(steps, 1)
