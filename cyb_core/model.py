"""Model wrapper: any Hugging Face causal LM plus the CYB settings that travel with it.

A checkpoint is an ordinary `save_pretrained` directory (safetensors weights,
config.json, tokenizer files); the CYB settings live in `config.json` under the
key "cyb", so `load(path)` needs nothing else. `load` also takes a hub id
("org/name") already in the local Hugging Face cache; it downloads only when the
user has not set HF_HUB_OFFLINE, and never changes that setting.
"""

from __future__ import annotations

import json
import re
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
from .architecture import (
    _rows,
    check_growth,
    context_length,
    fit_embeddings,
    ignores_position_ids,
    set_pad_id,
    sliding_window,
    warn_once,
)
from .losses import device_constant
from .model_files import refuse_remote_code, resolve
from .names import MODEL_PRESETS, RECIPES
from .vocab import apply_dk_prior

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

    def __init__(
        self, model, tokenizer, settings: CYBSettings | None = None, allow_resize: bool = False
    ):
        super().__init__()
        n_before = len(tokenizer)
        tok_lib.ensure_special_tokens(tokenizer)
        if not allow_resize:
            check_growth(_rows(model), len(tokenizer))
        fit_embeddings(model, len(tokenizer), padded=_rows(model) > n_before)
        self.model, self.tokenizer = model, tokenizer
        stored = getattr(model.config, "cyb", None)
        # False for a plain save_pretrained model: it runs at the CYBSettings defaults (w=1)
        self.has_cyb_settings = stored is not None
        self.settings = settings or CYBSettings(**stored or {})
        ids = tok_lib.special_ids(tokenizer)
        self.dk_id, self.eot_id, self.pad_id = ids["dk"], ids["eot"], ids["pad"]
        self.pause_ids: list[int] = ids["pauses"]
        set_pad_id(model, self.pad_id)
        self.ignores_position_ids = ignores_position_ids(model)
        self._check_positions()

    @property
    def n_tokens(self) -> int:
        """Ids the tokenizer can produce; logits rows at and above it are embedding padding."""
        return len(self.tokenizer)

    @property
    def max_positions(self) -> int | None:
        """The context the model was built for (config max_position_embeddings / n_positions)."""
        return context_length(self.model.config)

    def positions_needed(self, n_real: int) -> int:
        """Context used by n_real real tokens: a token and its pauses share one position id,
        but a model that ignores position ids counts every pause as a position (W per token)."""
        return n_real * (self.settings.w if self.ignores_position_ids else 1)

    def check_window(self, n_real: int) -> None:
        """Warn when n_real tokens with their pauses overflow the model's sliding window.

        Sliding-window models (Mistral, Gemma 2/3, ...) count their window in slots, not
        position ids: a token and its W-1 pauses take W of them, so the window covers W times
        fewer real tokens than it says.
        """
        window, w = sliding_window(self.model.config), self.settings.w
        if window is not None and w > 1 and n_real * w > window:
            warn_once(
                f"{self.model.config.model_type} attends over a sliding window of {window} "
                f"slots; with w={w} (a token and its pauses take {w}) {n_real} tokens fill "
                f"{n_real * w}, so a token sees only the last {window // w} tokens: use at most "
                f"{window // w} tokens per sequence (--seq-len) for the full window"
            )

    def _check_positions(self) -> None:
        if self.ignores_position_ids and self.settings.w > 1:
            warn_once(
                f"{self.model.config.model_type} ignores position_ids (ALiBi or similar): "
                "a pause is read as a new position instead of sharing its token's, unlike the "
                "method (docs/method.md); pauses still run, but results are not comparable"
            )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    def forward(
        self,
        input_ids,
        position_ids=None,
        attention_mask=None,
        cache=None,
        use_cache=False,
        *,
        prior: bool = True,
        logits_to_keep: int = 0,
    ):
        """Logits (B, L, V) with the DK prior applied, and the updated cache.

        The prior's constants are added in fp32: bf16 logits (under autocast) come back as fp32,
        a copy worth making for the few positions a decoding step reads. Callers that read
        every position (training, dense evaluation) pass prior=False and let the loss add it
        chunk by chunk (losses.step_quantities(psi=...)). logits_to_keep: logits of only the
        last this many positions (0: all), for callers that read only those.
        """
        if attention_mask is None:
            # Never leave the mask out: without one, transformers reads repeated position ids
            # (a token and its pauses share one) as packed sequences and blocks attention.
            attention_mask = torch.ones_like(input_ids)
        if cache is not None:  # decoding: the 4-D mask, so transformers never inspects the 2-D one
            attention_mask = self._decoding_mask(attention_mask, input_ids.shape[1])
        kw = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
        out = self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            **kw,
        )
        logits = out.logits
        if self.settings.mask_pauses:
            pauses = device_constant(self.pause_ids, torch.long, logits.device)  # cached
            # in place: the head's output is not saved for backward, so no second (B, L, V) copy
            logits = logits.index_fill_(-1, pauses, float("-inf"))
        if not prior:
            return logits, out.past_key_values
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()
        return apply_dk_prior(logits, self.dk_id, self.settings.psi), out.past_key_values

    def _decoding_mask(self, mask, q_len: int):
        """The 2-D padding mask (B, K) of a cached call as the 4-D mask (B, 1, q_len, K).

        Given a 2-D mask, transformers decides whether it may skip the mask with
        `if fast_all(padding_mask)` (masking_utils._ignore_causal_mask_sdpa): a host sync on
        every forward, i.e. every generated position under Recipe 2. A 4-D mask is used as it
        is. It is built here the way transformers builds it for SDPA (bool, True = attend) and
        eager attention (additive float); other attention implementations and sliding-window
        models (whose per-layer windows a single 4-D mask cannot carry) keep the 2-D mask.
        """
        config = self.model.config
        impl = getattr(config, "_attn_implementation", None)
        if impl not in ("sdpa", "eager") or sliding_window(config) is not None:
            return mask
        K = mask.shape[1]
        q = torch.arange(K - q_len, K, device=mask.device)[:, None]  # absolute query positions
        causal = torch.arange(K, device=mask.device)[None, :] <= q  # (q_len, K)
        allowed = causal[None, None] & mask.bool()[:, None, None, :]  # (B, 1, q_len, K)
        if impl == "sdpa":
            return allowed
        dtype = self.model.get_input_embeddings().weight.dtype
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)  # as transformers' eager_mask

    def with_settings(self, **changes) -> CYBModel:
        self.settings = replace(self.settings, **changes)
        self._check_positions()
        return self

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.config.cyb = asdict(self.settings)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)


def load(
    path: str | Path = BASE_DIR,
    device: str | torch.device = "cpu",
    *,
    cache_dir: str | Path | None = None,
    allow_resize: bool = False,
    **settings,
) -> CYBModel:
    """Load a checkpoint directory or cached hub id; keyword `settings` override the stored CYB
    settings. cache_dir: the Hugging Face hub cache (default: the user's, HF_HOME/HF_HUB_CACHE).
    allow_resize: let a tokenizer far larger than the embeddings grow them (see fit_embeddings).
    A checkpoint that needs its own Python code (`auto_map`, an unknown `model_type`) is refused."""
    path = resolve(path, cache_dir=cache_dir)
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
    refuse_remote_code(path)
    # trust_remote_code=False: never import a checkpoint's own Python, and never ask on stdin
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False
        )
    except RuntimeError as e:  # torch's "size mismatch for <param>": config.json vs the weights
        if not any(k in str(e) for k in ("size mismatch", "ignore_mismatched_sizes")):
            raise
        what = re.search(r"size mismatch for [^:]+:[^.]*", str(e))
        raise ValueError(
            f"the weights in {path} do not fit its config.json"
            + (f" ({what.group(0).strip()})" if what else "")
            + ": the config describes a model of another shape; restore the checkpoint's own "
            "config.json or re-save it with save_pretrained"
        ) from None
    tokenizer = _load_tokenizer(path)
    wrapped = CYBModel(model, tokenizer, allow_resize=allow_resize)
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
        return PreTrainedTokenizerFast.from_pretrained(str(path), trust_remote_code=False)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


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


def settings_notes(model: CYBModel, w_given: bool = False) -> list[str]:
    """What a user should know before running `model` the CYB way (for the CLI's warnings)."""
    notes = []
    if not model.has_cyb_settings and not w_given:
        notes.append(
            'the checkpoint has no CYB settings (no "cyb" key in its config.json), so it runs '
            f"with w={model.settings.w} (no pauses) and psi={model.settings.psi}; "
            "pass --w (and --psi) to set them"
        )
    return notes
