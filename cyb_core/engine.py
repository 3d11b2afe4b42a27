"""Pause-aware generation with a KV cache, batched; the decoding loops of both recipes.

Recipe 1 (constant): the W-1 pauses after a real token are known in advance, so the token and
its pauses go through the model as one block of W positions per forward call. A readout policy
picks the answer step S from d_0..d_{W-1} and the token is read from the logits of step S.

Recipe 2 (variable): every row advances one position per forward call, its input being either
its next pause (the model asked for one: DK drawn with probability d_i, or d_i >= a threshold)
or its next real token. Every row appends exactly one position per step, so the cache stays
rectangular however differently the rows pause. Rows that are done step on, masked out, until
a check finds a quarter of the batch done: those rows then leave the batch and its cache (in
both recipes; cyb_core.decoding.Out.poll). The prompt is read the same way, teacher-forced, so the model chooses its
own pauses after prompt tokens too and the history looks as it will while generating; rows
therefore need no padding.

Position ids are the real-token index, shared by a token and its pauses; the 2D attention mask
(B, past + new) grows with the cache. Readout policies, for both recipes: "greedy" answers at
the first step with d_i < 0.5, "threshold" at the first with d_i < dk_threshold, "sample"
draws DK with probability d_i at each step (so S ~ s). DK, pauses and padding are never emitted.

    gens = generate(model, ["The cat", "It was"], recipe="constant", max_new_tokens=20)
    print(gens[0].render())              # The cat sat[1] on[0] ...  (pauses after each token)
    for piece, k in stream(model, "The cat"): ...

The decoding loops themselves live in cyb_core.decoding; adaptive evaluation
(cyb_core.adaptive) runs its Recipe 2 loop teacher-forced.

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
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from . import tokenizer as tok_lib
from .decoding import Context, Out, _run_constant, poll_every, run_adaptive, wants_pause
from .names import GENERATION_READOUTS, RECIPES


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
        history=lambda: torch.cat([prompt_ids[out.live], out.tokens], 1),  # (B, P + max_new + 1)
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
    tokens, pauses, count = (x.tolist() for x in out.results())
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
