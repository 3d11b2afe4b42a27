"""What cyb needs to know of a transformers architecture: its embedding rows (grown to fit the
tokenizer), its pad id, its context and sliding window, and whether it reads position ids.
"""

from __future__ import annotations

import inspect
import sys


def set_pad_id(model, pad_id: int) -> None:
    """Record the tokenizer's pad id in a model config that has none (cyb added <pad>), so
    plain `generate()` and pipelines pad with it; a pad id the model already has is kept."""
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = pad_id


def _rows(model) -> int:
    return model.get_input_embeddings().weight.shape[0]


# The most rows a tokenizer may add to the embeddings without --allow-resize: our special tokens
# (a few dozen) always fit; a tokenizer far larger than the model it came with is a mistake.
GROWTH_ROWS, GROWTH_FRAC = 1000, 0.10


def check_growth(rows: int, n_tokens: int) -> None:
    """ValueError when `n_tokens` ids would grow `rows` embedding rows past the margin."""
    grow = n_tokens - rows
    if grow > max(GROWTH_ROWS, GROWTH_FRAC * rows):
        raise ValueError(
            f"the tokenizer has {n_tokens:,} ids but the model only {rows:,} embedding rows: "
            f"growing them by {grow:,} rows (more than {GROWTH_ROWS:,} or "
            f"{GROWTH_FRAC:.0%}) means the tokenizer does not belong to these weights; use the "
            "checkpoint's own tokenizer, or pass --allow-resize to grow them anyway"
        )


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


def sliding_window(config) -> int | None:
    """The attention window (in positions) of a model with sliding-window layers, else None."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if not isinstance(window, int) or window <= 0:
        return None
    if types is not None and "sliding_attention" not in types:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return window


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
