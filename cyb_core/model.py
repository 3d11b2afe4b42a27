"""Model wrapper: any Hugging Face causal LM plus the CYB settings that travel with it.

A checkpoint is an ordinary `save_pretrained` directory (safetensors weights,
config.json, tokenizer files); the CYB settings live in `config.json` under the
key "cyb", so `load(path)` needs nothing else. `load` also takes a hub id
("org/name") already in the local Hugging Face cache; it downloads only when the
user has not set HF_HUB_OFFLINE, and never changes that setting.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
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
from .names import HUB_ID, MODEL_PRESETS, RECIPES

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
        n_before = len(tokenizer)
        tok_lib.ensure_special_tokens(tokenizer)
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
    **settings,
) -> CYBModel:
    """Load a checkpoint directory or cached hub id; keyword `settings` override the stored CYB
    settings. cache_dir: the Hugging Face hub cache (default: the user's, HF_HOME/HF_HUB_CACHE)."""
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
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    tokenizer = _load_tokenizer(path)
    wrapped = CYBModel(model, tokenizer)
    if settings:
        wrapped.with_settings(**settings)
    return wrapped.to(device)


_HUB_ID = re.compile(HUB_ID)  # "name" or "org/name" (names.HUB_ID)
# Files a checkpoint needs; pickled weights (*.bin, *.pt) are never fetched.
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]


def cached(name: str | Path, cache_dir: str | Path | None = None) -> Path | None:
    """A hub id's snapshot directory in the local HF cache, or None; never touches the network."""
    if not _HUB_ID.fullmatch(str(name)) or ".." in str(name):
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name), cache_dir=cache_dir, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or a malformed cache entry
        return None


def resolve(name: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local directory as it is, else a hub id's snapshot directory in the local HF cache.

    An id missing from the cache is downloaded unless the user set HF_HUB_OFFLINE (read, never
    set here); safetensors and JSON/tokenizer files only.
    """
    path = Path(name)
    if path.exists() or not _HUB_ID.fullmatch(str(name)) or ".." in str(name):
        return path
    from huggingface_hub import constants, snapshot_download

    where = cache_dir or constants.HF_HUB_CACHE
    found = cached(name, cache_dir)
    if found is not None:
        return found
    if constants.is_offline_mode():
        raise FileNotFoundError(
            f"no directory {name} and no hub model {name!r} in the local Hugging Face cache "
            f"({where}; HF_HUB_OFFLINE is set): pass a checkpoint directory, or download it "
            f"first with `hf download {name}`"
        )
    try:
        return Path(snapshot_download(str(name), cache_dir=cache_dir, allow_patterns=_HUB_FILES))
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise FileNotFoundError(
            f"no directory {name}, {name!r} is not in the local Hugging Face cache ({where}) "
            f"and fetching it failed ({first}): pass a checkpoint directory, or download it "
            f"with `hf download {name}` where the hub is reachable"
        ) from None


def set_pad_id(model, pad_id: int) -> None:
    """Record the tokenizer's pad id in a model config that has none (cyb added <pad>), so
    plain `generate()` and pipelines pad with it; a pad id the model already has is kept."""
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = pad_id


def _rows(model) -> int:
    return model.get_input_embeddings().weight.shape[0]


def fit_embeddings(model, n_tokens: int, padded: bool) -> None:
    """Grow the embeddings when the tokenizer has ids past them; never shrink them.

    A checkpoint padded beyond its tokenizer (Qwen2: 151936 rows for ~151650 tokens) keeps its
    size while the new tokens fit in the padding. When it must grow, a padded checkpoint stays
    padded to the power-of-two multiple (<= 128) its size already had.
    """
    rows = _rows(model)
    if n_tokens <= rows:
        return
    multiple = (rows & -rows) if padded else 1  # the largest power of two dividing rows
    multiple = min(multiple, 128)
    model.resize_token_embeddings(n_tokens, pad_to_multiple_of=multiple if multiple > 1 else None)


# Model types whose attention positions come from the sequence, not position_ids (ALiBi).
ALIBI_MODEL_TYPES = frozenset({"bloom", "mpt", "baichuan", "jais"})


def ignores_position_ids(model) -> bool:
    """True for models that cannot give a pause its token's position (ALiBi: Bloom, MPT, ...)."""
    cfg = model.config
    if cfg.model_type in ALIBI_MODEL_TYPES or getattr(cfg, "alibi", False):
        return True
    if getattr(cfg, "position_embedding_type", None) == "alibi":
        return True
    return "position_ids" not in inspect.signature(model.forward).parameters


def context_length(config) -> int | None:
    """Positions the model was built for, or None when its config does not say."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """`warning: message` on stderr, once per process."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


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
