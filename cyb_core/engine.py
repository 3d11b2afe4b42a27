"""Pause-aware generation with a KV cache, batched; the decoding loops of both recipes.

Recipe 1 (constant): the W-1 pauses after a real token are known in advance, so the token and
its pauses go through the model as one block of W positions per forward call. A readout policy
picks the answer step S from d_0..d_{W-1} and the token is read from the logits of step S.

Recipe 2 (variable): every row advances one position per forward call, its input being either
its next pause (the model asked for one: DK drawn with probability d_i, or d_i >= a threshold)
or its next real token. Every row appends exactly one position per step, so the cache stays
rectangular however differently the rows pause; rows that are done keep stepping, masked out,
until all are done. The prompt is read the same way, teacher-forced, so the model chooses its
own pauses after prompt tokens too and the history looks as it will while generating; rows
therefore need no padding.

Position ids are the real-token index, shared by a token and its pauses; the 2D attention mask
(B, past + new) grows with the cache. Readout policies, for both recipes: "greedy" answers at
the first step with d_i < 0.5, "threshold" at the first with d_i < dk_threshold, "sample"
draws DK with probability d_i at each step (so S ~ s). DK, pauses and padding are never emitted.

    gens = generate(model, ["The cat", "It was"], recipe="constant", max_new_tokens=20)
    print(gens[0].render())              # The cat sat[1] on[0] ...  (pauses after each token)
    for piece, k in stream(model, "The cat"): ...

Adaptive evaluation (cyb_core.adaptive) runs the Recipe 2 loop here, teacher-forced.

Sampling is reproducible for a fixed seed, batch and device (one generator serves the batch).
The token at the answer step goes through `transformers` logits processors (repetition penalty,
then temperature, top-k, top-p, min-p) before the draw; stop strings are matched on the device
by `transformers.StopStringCriteria` after every emitted token. Prompts start with the
tokenizer's own BOS (cyb_core.tokenizer.encode) and must fit the model's context with
max_new_tokens (or are cut from the left with truncate=True).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    StopStringCriteria,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from . import tokenizer as tok_lib
from .names import GENERATION_READOUTS, RECIPES
from .precision import autocast


@dataclass
class Generation:
    prompt: str
    text: str  # the continuation, cut before end-of-text or a stop string
    token_ids: list[int]  # emitted tokens (through the one completing a stop string)
    pauses: list[int]  # per emitted token: pauses taken (Recipe 2) or answer step S (Recipe 1)
    pieces: list[str]  # decoded text of each token
    finish_reason: str  # "eot", "stop" or "length"
    truncated: int = 0  # prompt tokens cut from the left to fit the context (truncate=True)

    def render(self, show_pauses: bool = True) -> str:
        """The continuation, each token followed by its pause count: ` sat[1] on[0]`."""
        if not show_pauses:
            return self.text
        return "".join(f"{p}[{k}]" for p, k in zip(self.pieces, self.pauses, strict=True))


class Context:
    """A DynamicCache and the 2D attention mask (B, past + new) that must grow with it.

    With use_cache=False the whole sequence is kept and recomputed at each call instead (the
    slow reference); either way a call returns the float32 logits of the new positions (of the
    last `keep` of them: the model's head runs on those alone). CYBModel turns the 2-D mask of
    a cached call into the 4-D one, so a decoding step never waits for the GPU.
    """

    def __init__(self, model, use_cache: bool = True, bf16: bool = False):
        self.model, self.use_cache, self.bf16 = model, use_cache, bf16
        self.cache = DynamicCache(config=model.model.config) if use_cache else None
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


class Out:
    """Emitted tokens and pause counts per row, written on the device without syncing."""

    def __init__(self, model, B: int, max_new: int, stop: list[str] | None, every: int):
        dev = model.device
        self.model, self.max_new, self.stop, self.every = model, max_new, stop or [], every
        self.rows = torch.arange(B, device=dev)
        # last column: scratch; unused slots hold DK, which is banned, so the repetition
        # penalty reading them (Picker.history) changes nothing
        self.tokens = torch.full((B, max_new + 1), model.dk_id, device=dev)
        self.pauses = torch.zeros((B, max_new + 1), dtype=torch.long, device=dev)
        self.count = torch.zeros(B, dtype=torch.long, device=dev)
        self.done = torch.zeros(B, dtype=torch.bool, device=dev)
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

    def poll(self, step: int) -> bool:
        """Every `every` steps: True once all rows are done."""
        if (step + 1) % self.every:
            return False
        return bool(self.done.all())  # CPU-GPU sync


_NO_TOKEN = 2**62
GPU_POLL_EVERY = 8  # decoding steps between checks that every row is done, off the CPU


def poll_every(device: torch.device, steps_per_token: int = 1) -> int:
    """Steps between `Out.poll` syncs: every step on the CPU (a check costs nothing there);
    elsewhere GPU_POLL_EVERY tokens' worth, each check waiting for the device. A Recipe 2 step
    is one position, and a token takes up to W of them (steps_per_token), so there it is
    GPU_POLL_EVERY * W steps. Rows that are done meanwhile keep stepping, masked."""
    return 1 if device.type == "cpu" else GPU_POLL_EVERY * steps_per_token


def wants_pause(policy: str, threshold: float, gen: torch.Generator, d: Tensor) -> Tensor:
    """Whether the model asks for a pause at steps with don't-know probabilities d."""
    if policy == "sample":
        return torch.rand(d.shape, generator=gen, device=d.device) < d
    return d >= (0.5 if policy == "greedy" else threshold)


class Picker:
    """Next real token (B,) from logits (B, V) through `transformers` logits processors.

    `banned` (DK, pauses, padding, embedding rows past the tokenizer) are never chosen. The
    repetition penalty reads `history()`, (B, N) ids of each row's prompt and emitted tokens
    (filled with a banned id, DK, where a row has fewer). Greedy unless do_sample with a
    temperature > 0; then temperature, top-k, top-p and min-p filter before one draw per row.
    """

    def __init__(
        self,
        banned: Tensor,
        gen: torch.Generator,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        history=None,
    ):
        self.banned, self.gen, self.history = banned, gen, history
        self.sample = do_sample and temperature > 0
        self.processors = LogitsProcessorList()
        if repetition_penalty is not None and repetition_penalty != 1.0:
            self.processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
        self.warpers = LogitsProcessorList()
        if self.sample:
            if temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(temperature))
            if top_k:
                self.warpers.append(TopKLogitsWarper(top_k))
            if top_p is not None and top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p))
            if min_p:
                self.warpers.append(MinPLogitsWarper(min_p))

    def __call__(self, z: Tensor) -> Tensor:
        z = z.index_fill(-1, self.banned, -math.inf)
        if self.processors:
            z = self.processors(self.history(), z)
        if not self.sample:
            return z.argmax(-1)
        z = self.warpers(None, z)
        return torch.multinomial(z.softmax(-1), 1, generator=self.gen)[:, 0]


@torch.no_grad()
def _run_constant(model, prompts: list[list[int]], ctx: Context, out: Out, asks, pick):
    """Recipe 1: each emitted token goes back in with its W-1 pauses as one (B, W) block."""
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
        if i + 1 == out.max_new or out.poll(i):  # every row has emitted max_new tokens, or all done
            return
        block = torch.cat([tok[:, None], tail], 1)  # (B, W)
        logits = ctx(block, (n_real + i)[:, None].expand(B, W), ~out.done[:, None].expand(B, W))


@torch.no_grad()
def run_adaptive(model, forced: list[list[int]], ctx: Context, out: Out, asks, pick=None, rec=None):
    """Recipe 2: one position per row per step; real tokens come from `forced` while it lasts.

    With `pick`, each row then generates; without, the row is done once the last forced
    token has been answered (teacher-forced evaluation: forced[t + 1] is the target of step t).
    `rec` (cyb_core.adaptive's recorder) is told every step's quantities.
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
        if out.poll(step):
            return


def _start(
    model,
    prompts,
    *,
    recipe,
    max_new_tokens,
    readout,
    dk_threshold,
    temperature,
    top_k,
    top_p,
    do_sample,
    stop,
    seed,
    bf16,
    use_cache,
    min_p=None,
    repetition_penalty=None,
    truncate=False,
):
    """Validate the settings and return the decoding loop (a generator) and its output buffers."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    if readout not in GENERATION_READOUTS:
        raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(GENERATION_READOUTS)}")
    if not 0.0 <= dk_threshold <= 1.0:
        raise ValueError(f"dk_threshold must be in [0, 1], got {dk_threshold}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be a positive number of tokens (0: all), got {top_k}")
    if min_p is not None and not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    if repetition_penalty is not None and not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1: none), got {repetition_penalty}")
    if not prompts or max_new_tokens < 1:
        raise ValueError("need at least one prompt and max_new_tokens >= 1")
    if stop and not all(stop):
        raise ValueError("an empty stop string would stop at once: give non-empty stop strings")
    ids, cut = fit_prompts(
        model, tok_lib.encode(model.tokenizer, prompts), max_new_tokens, truncate
    )
    model.check_window(max(map(len, ids)) + max_new_tokens)
    model.eval()
    dev = model.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    per_token = model.settings.w if recipe == "variable" else 1
    out = Out(model, len(ids), max_new_tokens, stop, every=poll_every(dev, per_token))
    out.truncated = cut
    prompt_ids = torch.full((len(ids), max(map(len, ids))), model.dk_id, dtype=torch.long)
    for b, p in enumerate(ids):
        prompt_ids[b, : len(p)] = torch.tensor(p)
    prompt_ids = prompt_ids.to(dev)
    pick = Picker(
        banned_ids(model),
        gen,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        history=lambda: torch.cat([prompt_ids, out.tokens], 1),  # (B, P + max_new + 1)
    )
    asks = partial(wants_pause, readout, dk_threshold, gen)
    ctx = Context(model, use_cache, bf16)
    if recipe == "constant":
        return _run_constant(model, ids, ctx, out, asks, pick), out
    return run_adaptive(model, ids, ctx, out, asks, pick), out


def banned_ids(model) -> Tensor:
    """Ids generation never emits: DK, the pauses, padding and embedding rows past the tokenizer."""
    extra = range(model.n_tokens, model.vocab_size)  # a vocabulary padded beyond the tokenizer
    pad = [model.pad_id] if model.pad_id != model.eot_id else []  # pad = eos: eos must stay
    return torch.tensor([model.dk_id, *model.pause_ids, *pad, *extra], device=model.device)


def fit_prompts(
    model, ids: list[list[int]], max_new_tokens: int, truncate: bool = False
) -> tuple[list[list[int]], list[int]]:
    """Check that every prompt plus max_new_tokens fits the model's context.

    Returns the prompts (an empty one becomes BOS, or end-of-text for a tokenizer without BOS:
    either starts a new document) and the tokens cut
    from each. Too long: ValueError naming the fix, or with `truncate` the prompt keeps its BOS
    and its last tokens. A token and its pauses share a position id, so the context counts real
    tokens; a model that ignores position ids counts W positions per token (positions_needed).
    """
    bos = tok_lib.bos_ids(model.tokenizer)
    ids = [p or [model.eot_id] for p in ids]
    ctx = model.max_positions
    cut = [0] * len(ids)
    if ctx is None:
        return ids, cut
    per_token = model.positions_needed(1)
    fits = ctx // per_token - max_new_tokens  # real prompt tokens that fit
    for b, p in enumerate(ids):
        if len(p) <= fits:
            continue
        need = model.positions_needed(len(p) + max_new_tokens)
        if not truncate or fits <= len(bos):
            fix = (
                f"shorten it or truncate it (--truncate) to its last {fits} tokens"
                if fits > len(bos)
                else f"lower max_new_tokens (--max-new-tokens) below {ctx // per_token}"
            )
            raise ValueError(
                f"prompt {b + 1} is {len(p)} tokens; with {max_new_tokens} new tokens it needs "
                f"{need} positions but the model's context is {ctx}: {fix}"
            )
        cut[b] = len(p) - fits
        ids[b] = [*bos, *p[len(bos) + cut[b] :]]
    return ids, cut


def _pieces(tokenizer, ids: list[int]) -> list[str]:
    """Text of each token, decoded incrementally so multi-byte characters come out whole."""
    pieces, prev = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        pieces.append(
            text[len(prev) :] if text.startswith(prev) else tokenizer.decode(ids[i : i + 1])
        )
        prev = text
    return pieces


def _finish(
    model, prompt: str, ids: list[int], pauses: list[int], stop, truncated: int = 0
) -> Generation:
    reason = "length"
    if model.eot_id in ids:
        reason, cut = "eot", ids.index(model.eot_id)
        ids, pauses = ids[:cut], pauses[:cut]
    pieces = _pieces(model.tokenizer, ids)
    text = "".join(pieces)
    hits = [(i, s) for s in stop or [] if (i := text.find(s)) >= 0]
    if hits:
        i, s = min(hits)
        n = next(
            j + 1 for j, L in enumerate(itertools.accumulate(map(len, pieces))) if L >= i + len(s)
        )
        reason, text, ids, pauses, pieces = "stop", text[:i], ids[:n], pauses[:n], pieces[:n]
    return Generation(prompt, text, ids, pauses, pieces, reason, truncated)


def generate(
    model,
    prompts: list[str],
    *,
    recipe: str = "constant",
    max_new_tokens: int = 64,
    readout: str = "greedy",
    dk_threshold: float = 0.5,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    do_sample: bool = False,
    stop: list[str] | None = None,
    seed: int = 0,
    bf16: bool = False,
    use_cache: bool = True,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    truncate: bool = False,
) -> list[Generation]:
    """Continue each prompt with `model` (a CYBModel), all prompts in one batch.

    recipe: "constant" (W-1 pauses after every token, Recipe 1) or "variable" (pauses when
    the model asks, Recipe 2). readout: how the answer step is chosen (module docstring).
    The token at that step: argmax, or with do_sample a draw at `temperature` restricted to
    the top_k tokens / the top_p nucleus / tokens with at least min_p times the top
    probability; repetition_penalty (> 1) discourages tokens of the prompt and output
    (transformers' RepetitionPenaltyLogitsProcessor). Generation ends at end-of-text, a stop
    string (cut from the text) or max_new_tokens. A prompt that with max_new_tokens exceeds the
    model's context raises ValueError, or with truncate=True loses its oldest tokens
    (Generation.truncated says how many). use_cache=False recomputes the whole sequence at every
    step (the slow reference). bf16 autocasts the forward passes.
    """
    loop, out = _start(
        model,
        prompts,
        recipe=recipe,
        max_new_tokens=max_new_tokens,
        readout=readout,
        dk_threshold=dk_threshold,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        do_sample=do_sample,
        stop=stop,
        seed=seed,
        bf16=bf16,
        use_cache=use_cache,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        truncate=truncate,
    )
    for _ in loop:
        pass
    tokens, pauses, count = out.tokens.tolist(), out.pauses.tolist(), out.count.tolist()
    return [
        _finish(model, p, tokens[b][: count[b]], pauses[b][: count[b]], stop, out.truncated[b])
        for b, p in enumerate(prompts)
    ]


def stream(model, prompt: str, **kwargs) -> Iterator[tuple[str, int]]:
    """Yield (text piece, pauses) per token of one prompt as it is produced.

    Takes generate()'s keywords; tokens match generate()'s, but a stop string ends the stream
    without being cut from it. Syncs with the device once per step.
    """
    loop, _ = _start(model, [prompt], **{**_DEFAULTS, **kwargs})
    ids, prev = [], ""
    for tok, k, emitted in loop:
        if not bool(emitted[0]):  # CPU-GPU sync
            continue
        if int(tok[0]) == model.eot_id:
            return
        ids.append(int(tok[0]))
        text = model.tokenizer.decode(ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            yield text[len(prev) :], int(k[0])
            prev = text


_DEFAULTS = dict(generate.__kwdefaults__)


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
