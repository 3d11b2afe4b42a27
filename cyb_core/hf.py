"""Trained checkpoints in plain `transformers`: a logits processor for generate() and pipeline.

A checkpoint written by `cyb train` is an ordinary `save_pretrained` directory, so
AutoModelForCausalLM loads it; but its output distribution includes `<dont_know>` (DK) and,
unless trained with mask_pauses, the pause tokens, which plain decoding would then emit.
CYBLogitsProcessor applies the DK prior the model was trained with (method.md section 1) and
bans DK, the pauses, padding and embedding rows past the tokenizer:

    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    from cyb_core.hf import cyb_logits_processor

    final = "runs/demo/cyb-ap-1x1-s0/final"
    model = AutoModelForCausalLM.from_pretrained(final, trust_remote_code=False)
    tok = AutoTokenizer.from_pretrained(final, trust_remote_code=False)
    procs = cyb_logits_processor(model, tok)
    out = model.generate(**tok("The cat", return_tensors="pt"), logits_processor=procs)
    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    pipe("The cat", logits_processor=procs, max_new_tokens=20)

Plain decoding feeds no pauses: every token is read at step 0, as with W = 1. For generation
with pauses (Recipe 1 or 2) use cyb_core.engine.
"""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from . import tokenizer as tok_lib
from .vocab import apply_dk_prior


class CYBLogitsProcessor(LogitsProcessor):
    """Scores (B, V) -> the DK prior applied, then DK, pauses and padding set to -inf.

    n_tokens: ids the tokenizer can produce; columns at and above it (a vocabulary padded
    beyond the tokenizer, as Qwen2's) are banned too.
    """

    def __init__(self, dk_id: int, banned_ids: list[int], psi: float = 0.9, n_tokens=None):
        if not 0.0 < psi < 1.0:
            raise ValueError(f"psi must be in (0, 1), got {psi}")
        self.dk_id, self.psi, self.n_tokens = dk_id, psi, n_tokens
        self.banned = torch.tensor(sorted({dk_id, *banned_ids}), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = apply_dk_prior(scores, self.dk_id, self.psi)
        scores = scores.index_fill(-1, self.banned.to(scores.device), -math.inf)
        if self.n_tokens is not None and self.n_tokens < scores.shape[-1]:
            scores[..., self.n_tokens :] = -math.inf
        return scores

    @classmethod
    def from_model(cls, model, tokenizer) -> CYBLogitsProcessor:
        """For a checkpoint reloaded with AutoModelForCausalLM and its saved tokenizer."""
        if tok_lib.DK not in tokenizer.get_vocab():
            raise ValueError(
                f"the tokenizer has no {tok_lib.DK} token: this is not a CYB checkpoint "
                "(train one with `cyb train`, or load it through cyb_core.model.load)"
            )
        ids = tok_lib.special_ids(tokenizer)
        pad = [ids["pad"]] if ids["pad"] not in (None, ids["eot"]) else []  # pad = eos: keep eos
        psi = (getattr(model.config, "cyb", None) or {}).get("psi", 0.9)
        return cls(ids["dk"], [*ids["pauses"], *pad], psi=psi, n_tokens=len(tokenizer))


def cyb_logits_processor(model, tokenizer) -> LogitsProcessorList:
    """The `logits_processor` argument for model.generate() or a text-generation pipeline."""
    return LogitsProcessorList([CYBLogitsProcessor.from_model(model, tokenizer)])
