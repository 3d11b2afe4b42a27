"""The `cyb` model type of EleutherAI's lm-evaluation-harness, and `cyb lm-eval`.

`CYBLM` is lm-eval's own `hf` model (HFLM: its tokenization, batching, truncation, caching and
metrics) with the model call replaced: every real token is read with its pauses and scored by
the predictive distribution of the CYB model, so `loglikelihood` (multiple choice),
`loglikelihood_rolling` (perplexity) and their `is_greedy` are pause-aware:

- mode=dense (Recipe 1, as `cyb eval`): W-1 pauses after every token in one parallel pass;
  p(v) = sum_i s_i t_i(v), the answer policy of the variant's read-out (for a W = 1 model,
  the next-token softmax with <dont_know> renormalised away);
- mode=adaptive (Recipe 2, as `cyb eval --mode adaptive`): teacher-forced, a pause fed only
  while the model says don't-know (d >= dk_threshold); p(v) = t_k(v) at the step k it answers.

`generate_until` runs cyb_core.engine (Recipe 1 or 2 by the same mode). Model arguments:
pretrained (a checkpoint directory or cached hub id, loaded as `cyb generate` loads it), w and
psi (override the checkpoint's CYB settings), mode, dk_threshold, device, batch_size,
max_length.

    cyb lm-eval --model cyb --model_args pretrained=runs/x/final,w=4,mode=dense --tasks T
    lm_eval.simple_evaluate(model=CYBLM(pretrained="runs/x/final"), tasks=[...])

Importing this module registers the type (lm-eval's built-in types first, so `hf` stays known).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from . import losses, pauses, variants
from . import model as model_lib
from .distributed import resolve_device


@contextmanager
def _environment_kept():
    """Undo what an import does to os.environ (lm-eval sets HF_XET_HIGH_PERFORMANCE): importing
    the core changes no process-wide variable (tests/test_model.py)."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        for key, value in before.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


with _environment_kept():
    import lm_eval.models  # noqa: F401  -- registers lm-eval's own types before ours
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM

MODES = ("dense", "adaptive")


@register_model("cyb")
class CYBLM(HFLM):
    """lm-eval's HFLM over a CYBModel: scores and generates with pauses (module docstring)."""

    def __init__(
        self,
        pretrained: str,
        w: int | None = None,
        psi: float | None = None,
        mode: str = "dense",
        dk_threshold: float = 0.5,
        device: str = "auto",
        batch_size: int | str = 1,
        max_length: int | None = None,
        **kwargs,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0.0 <= float(dk_threshold) <= 1.0:
            raise ValueError(f"dk_threshold must be in [0, 1], got {dk_threshold}")
        overrides = {k: v for k, v in (("w", w), ("psi", psi)) if v is not None}
        dev = resolve_device(str(device), 0)
        self.cyb = model_lib.load(str(pretrained), device=dev, **overrides).eval()
        self.mode, self.dk_threshold = mode, float(dk_threshold)
        if max_length is None and (ctx := self.cyb.max_positions) is not None:
            # a model that ignores position ids spends W positions per token
            max_length = ctx // self.cyb.positions_needed(1)
        super().__init__(
            pretrained=self.cyb.model,
            tokenizer=self.cyb.tokenizer,
            batch_size=batch_size,
            max_length=max_length,
            **kwargs,
        )

    # ------------------------------------------------------------------ scoring

    def _model_call(self, inps: torch.Tensor, attn_mask=None, labels=None) -> torch.Tensor:
        """(B, L) right-padded ids -> (B, L, V) log p(next token = v) with pauses; HFLM's
        log_softmax of it is itself (each row is normalised; <dont_know> is -inf)."""
        with torch.no_grad():
            if self.mode == "adaptive" and self.cyb.settings.w > 1:
                return self._adaptive_logp(inps)
            return self._dense_logp(inps)

    def _dense_logp(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.cyb
        ex = pauses.expand_constant(ids, m.settings.w, m.pause_ids)
        logits, _ = m(ex.input_ids, position_ids=ex.position_ids, attention_mask=ex.attention_mask)
        logits = ex.to_steps(logits).float()  # (B, L, W, V)
        # log s (B, L, W) depends on the don't-know probabilities only, not on the target
        q = losses.step_quantities(logits, torch.zeros_like(ids), m.dk_id)
        log_s = losses.readout(q, variants.get(m.settings.variant).readout).log_s
        log_t = logits.index_fill(-1, torch.tensor([m.dk_id], device=logits.device), -torch.inf)
        log_t = log_t.log_softmax(-1)  # (B, L, W, V): t_i(v), <dont_know> renormalised away
        return torch.logsumexp(log_s[..., None] + log_t, dim=2)  # (B, L, V)

    def _adaptive_logp(self, ids: torch.Tensor) -> torch.Tensor:
        from functools import partial

        from .decoding import Context, Out, run_adaptive, wants_pause

        m = self.cyb
        B, L = ids.shape
        rec = _AnswerDistribution(B, L, m.vocab_size, m.dk_id, m.device)
        # one dummy target after each row: the last position's answer step and distribution
        # depend on the don't-know probabilities only, never on the target
        forced = [[*row, m.pad_id] for row in ids.tolist()]
        asks = partial(wants_pause, "threshold", self.dk_threshold, None)
        out = Out(m, B, 0, None, every=1 if m.device.type == "cpu" else 8)
        for _ in run_adaptive(m, forced, Context(m, True, False), out, asks, rec=rec):
            pass
        return rec.logp[:, :L]

    # ------------------------------------------------------------------ generation

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Each request continued by cyb_core.engine (Recipe 1 dense, Recipe 2 adaptive)."""
        from .engine import generate

        out = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc="generate"):
            context, gen_kwargs = req.args
            kw = dict(gen_kwargs)
            until = kw.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kw.pop("temperature", 0.0) or 0.0)
            do_sample = bool(kw.pop("do_sample", False)) and temperature > 0
            gen = generate(
                self.cyb,
                [context],
                recipe="constant" if self.mode == "dense" else "variable",
                max_new_tokens=int(kw.pop("max_gen_toks", self.max_gen_toks)),
                dk_threshold=self.dk_threshold,
                do_sample=do_sample,
                temperature=temperature if do_sample else 1.0,
                stop=until or None,
                truncate=True,
            )[0]
            out.append(gen.text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), gen.text)
        return out


class _AnswerDistribution:
    """For cyb_core.decoding.run_adaptive: (B, L, V) log t_k(v) at the step k each position
    answers, <dont_know> renormalised away; index L of the time axis is a scratch slot."""

    def __init__(self, B: int, L: int, V: int, dk_id: int, device):
        self.L, self.rows = L, torch.arange(B, device=device)
        self.dk = torch.tensor([dk_id], device=device)
        self.logp = torch.full((B, L + 1, V), -torch.inf, device=device)

    def step(self, t, k, d, logp, target, answer, done) -> None:
        at = torch.where(answer & ~done, t, self.L).clamp_max(self.L)
        no_dk = logp.float().index_fill(1, self.dk, -torch.inf)
        self.logp[self.rows, at] = no_dk.log_softmax(-1)


def cli(args: list[str]) -> int:
    """lm-eval's own command line with the `cyb` type registered; returns its exit status."""
    from lm_eval.__main__ import cli_evaluate

    argv = sys.argv
    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return 0
