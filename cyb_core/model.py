"""Model wrapper: any Hugging Face causal LM plus the CYB settings that travel with it.

A checkpoint is an ordinary `save_pretrained` directory (safetensors weights,
config.json, tokenizer files); the CYB settings live in `config.json` under the
key "cyb", so `load(path)` needs nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from . import tokenizer as tok_lib
from .losses import apply_dk_prior
from .names import MODEL_PRESETS, RECIPES

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for a hub
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

BASE_DIR = Path("data/base")

# Llama-style RoPE decoders small enough to pretrain on a 2-core CPU.
PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=2),
    # as narrow as tiny but three times as deep: depth costs little next to the 8192-way head,
    # and a pause step must spend a layer reading its real token before it can compute
    "tiny-deep": dict(
        hidden_size=64, intermediate_size=176, num_hidden_layers=6, num_attention_heads=2
    ),
    "small": dict(
        hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4
    ),
    "medium": dict(
        hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6
    ),
}
# `cyb pretrain --preset` offers names.MODEL_PRESETS without loading torch; both list the same
assert tuple(PRESETS) == MODEL_PRESETS, "PRESETS and names.MODEL_PRESETS must have the same keys"


@dataclass(frozen=True)
class CYBSettings:
    """What a checkpoint needs to be used the CYB way; stored in config.json["cyb"]."""

    w: int = 1  # steps per real token: the token itself plus w-1 pauses (1 = no pauses)
    psi: float = 0.9  # DK prior psi' (method.md section 1)
    variant: str = "baseline"
    recipe: str = "constant"  # "constant" (Recipe 1) or "variable" (Recipe 2)
    hparams: dict = field(default_factory=dict)  # omega, gamma, rho, alpha, ...
    # Pause tokens are input only: with their logits at -inf the output softmax never pushes
    # their rows, which the output head shares with the input embeddings when tied.
    mask_pauses: bool = False

    def __post_init__(self):
        if not 1 <= self.w <= tok_lib.MAX_PAUSES + 1:
            raise ValueError(f"w must be in 1..{tok_lib.MAX_PAUSES + 1}, got {self.w}")
        if not 0.0 < self.psi < 1.0:
            raise ValueError(f"psi must be in (0, 1), got {self.psi}")
        if self.recipe not in RECIPES:
            raise ValueError(
                f"recipe must be {' or '.join(map(repr, RECIPES))}, got {self.recipe!r}"
            )


class CYBModel(torch.nn.Module):
    """A causal LM whose logits carry the DK prior, with the ids of the CYB tokens at hand."""

    def __init__(self, model, tokenizer, settings: CYBSettings | None = None):
        super().__init__()
        if tok_lib.ensure_special_tokens(tokenizer) or len(tokenizer) > model.config.vocab_size:
            model.resize_token_embeddings(len(tokenizer))
        self.model, self.tokenizer = model, tokenizer
        self.settings = settings or CYBSettings(**getattr(model.config, "cyb", None) or {})
        ids = tok_lib.special_ids(tokenizer)
        self.dk_id, self.eot_id, self.pad_id = ids["dk"], ids["eot"], ids["pad"]
        self.pause_ids: list[int] = ids["pauses"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    def forward(
        self, input_ids, position_ids=None, attention_mask=None, cache=None, use_cache=False
    ):
        """Logits (B, L, V) with the DK prior applied, and the updated cache."""
        if attention_mask is None:
            # Never leave the mask out: without one, transformers reads repeated position ids
            # (a token and its pauses share one) as packed sequences and blocks attention.
            attention_mask = torch.ones_like(input_ids)
        out = self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
        )
        logits = out.logits
        if self.settings.mask_pauses:
            pauses = torch.tensor(self.pause_ids, device=logits.device)
            logits = logits.index_fill(-1, pauses, float("-inf"))
        return apply_dk_prior(logits, self.dk_id, self.settings.psi), out.past_key_values

    def with_settings(self, **changes) -> CYBModel:
        self.settings = replace(self.settings, **changes)
        return self

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.config.cyb = asdict(self.settings)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)


def load(path: str | Path = BASE_DIR, device: str | torch.device = "cpu", **settings) -> CYBModel:
    """Load a checkpoint directory; keyword `settings` override the stored CYB settings."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path} (config.json missing): pass a directory written by "
            "`cyb pretrain`/`cyb train` or any save_pretrained model"
        )
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(
            f"no safetensors weights in {path}: only safetensors checkpoints are loaded "
            "(re-save the model with save_pretrained(..., safe_serialization=True))"
        )
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    tokenizer = _load_tokenizer(path)
    wrapped = CYBModel(model, tokenizer)
    if settings:
        wrapped.with_settings(**settings)
    return wrapped.to(device)


def _load_tokenizer(path: Path):
    """The tokenizer saved with a checkpoint, as the class it was saved as.

    AutoTokenizer would pick a class from the *model* type (e.g. Qwen2's, which adds its own
    `<|endoftext|>`) for a generic tokenizer saved next to that model.
    """
    cfg = path / "tokenizer_config.json"
    saved_as = json.loads(cfg.read_text()).get("tokenizer_class") if cfg.is_file() else None
    if (
        saved_as in (None, "TokenizersBackend", "PreTrainedTokenizerFast")
        and (path / "tokenizer.json").is_file()
    ):
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(path)


def new_base(
    tokenizer, preset: str = "small", max_positions: int = 2048, seed: int = 0
) -> CYBModel:
    """A freshly initialised Llama-style decoder sized by `preset`, with tied embeddings."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose from {', '.join(PRESETS)}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=PRESETS[preset]["num_attention_heads"],
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **PRESETS[preset],
    )
    torch.manual_seed(seed)
    return CYBModel(AutoModelForCausalLM.from_config(config), tokenizer)


def from_config(config_dict: dict, tokenizer, seed: int = 0) -> CYBModel:
    """A fresh model of any registered architecture, e.g. {'model_type': 'gpt2', 'n_layer': 2}."""
    config = AutoConfig.for_model(**config_dict)
    torch.manual_seed(seed)
    return CYBModel(AutoModelForCausalLM.from_config(config), tokenizer)


def n_params(model: CYBModel) -> int:
    return sum(p.numel() for p in model.model.parameters())
