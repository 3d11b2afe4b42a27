"""A training run's settings (TrainConfig) and what follows from them alone: the number of
steps, the learning-rate schedule, the Recipe 2 pause counts of each step, and the record of
the config a run directory keeps (config.json).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields

import torch

from . import losses
from . import model as model_lib

# Options that must be positive integers, with the flag that sets each (checked before any work).
POSITIVE = {
    "seq_len": "--seq-len",
    "batch_size": "--batch-size",
    "grad_accum": "--grad-accum",
    "tokens": "--tokens",
    "eval_every": "--eval-every",
    "ckpt_every": "--ckpt-every",
}


@dataclass(frozen=True)
class TrainConfig:
    out: str  # run directory
    init: str = str(model_lib.BASE_DIR)  # checkpoint to start from, or "scratch:<preset>"
    tokenizer: str = "data/tokenizer"  # used only when init is scratch
    variant: str = "baseline"
    w: int = 1  # steps per real token (tbys: pauses + 1)
    recipe: str = "constant"
    psi: float = 0.9
    hparams: dict = field(default_factory=dict)
    mask_pauses: bool = False  # pause logits at -inf: pauses are input only (model.CYBSettings)
    allow_resize: bool = False  # let init's tokenizer grow its embeddings past the margin
    pause_init: str = (
        "keep"  # input embeddings of the pause tokens: as in `init`, or "mean" of the real tokens
    )
    data_root: str = "data/corpus"
    split: str = "finetune"
    data_tokens: int = 0  # train on only the first this many real tokens of the split (0 = all)
    seq_len: int = 128  # real tokens per sequence
    batch_size: int = 32  # sequences per optimiser step (split into grad_accum micro-batches)
    grad_accum: int = 1
    tokens: int = 300_000  # budget in real training tokens
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup: float = 0.05  # fraction of steps
    weight_decay: float = 0.1
    clip: float = 1.0
    val_blocks: int = 32  # blocks held back from the training split for periodic evaluation
    eval_every: int = 50  # steps
    ckpt_every: int = 50  # steps
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast to bf16 on CUDA

    def __post_init__(self):
        for name, flag in POSITIVE.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"{name} must be a positive integer, got {value!r}: pass {flag} 1 or more"
                )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}: pass e.g. --lr 1e-3")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.data_tokens < 0 or self.val_blocks < 0:
            raise ValueError("data_tokens and val_blocks must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0 or not self.clip > 0:
            raise ValueError("min_lr_ratio must be in [0, 1] and clip > 0")
        model_lib.CYBSettings(w=self.w, psi=self.psi, variant=self.variant, recipe=self.recipe)
        losses.check(self.variant, self.w, **self.loss_hparams)
        if self.recipe == "variable":
            losses.parse_vector(self.pause_omega, self.w, name="omega")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )
        if self.pause_init not in ("keep", "mean"):
            raise ValueError(f"pause_init must be 'keep' or 'mean', got {self.pause_init!r}")

    @property
    def loss_hparams(self) -> dict:
        """Under Recipe 2 omega is where the world stops, already sampled into the pause
        counts; the loss then sees the realised stop (DK forced to 0 there) and no omega."""
        if self.recipe == "variable":
            return {k: v for k, v in self.hparams.items() if k != "omega"}
        return self.hparams

    @property
    def pause_omega(self):
        """Distribution of the number of steps under Recipe 2 (default uniform over 1..W)."""
        return self.hparams.get("omega", ":".join(["1"] * self.w))

    @property
    def steps(self) -> int:
        return math.ceil(self.tokens / (self.batch_size * self.seq_len))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to min_lr_ratio * peak at the last step."""
    warm = max(1, round(cfg.warmup * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - 1 - warm)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def sample_pause_counts(cfg: TrainConfig, shape: tuple[int, int], step: int) -> torch.Tensor | None:
    """Recipe 2 pause counts (B, T) for the *global* batch of optimiser step `step`, or None.

    Drawn on the CPU from a generator seeded by (seed, step) alone, in the same single draw
    `pauses.expand_variable` makes for a (B, T) batch; every rank draws the whole batch and
    keeps its rows, so the counts do not depend on the number of processes or micro-batches.
    """
    if cfg.recipe != "variable" or cfg.w <= 1:
        return None
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    omega = losses.parse_vector(cfg.pause_omega, cfg.w)
    B, T = shape
    return torch.multinomial(omega, B * T, replacement=True, generator=gen).view(B, T)


def recorded_config(cfg: TrainConfig, device: torch.device | None = None) -> dict:
    """The run's config.json: cfg, with what the run does not use cleared so the record is
    true: the tokenizer builds only a scratch model (None otherwise), and bf16 autocasts only on
    CUDA (False on another device). Applied to a stored config too, so older records compare."""
    rec = asdict(cfg) if isinstance(cfg, TrainConfig) else dict(cfg)
    if not str(rec.get("init", "")).startswith("scratch:"):
        rec["tokenizer"] = None
    if device is not None and device.type != "cuda":
        rec["bf16"] = False
    return rec


def _same_config(stored: dict, cfg: TrainConfig, device: torch.device | None = None) -> bool:
    """A run directory matches cfg; settings added since it was written count at their defaults."""
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    return recorded_config({**defaults, **stored}, device) == recorded_config(cfg, device)
