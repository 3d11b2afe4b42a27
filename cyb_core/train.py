"""One flat training loop for pretraining (no pauses) and CYB fine-tuning.

The budget is counted in *real* (non-pause) tokens so that variants with and
without pauses are compared on equal data. A run directory holds config.json,
log.jsonl, a resumable checkpoint (ckpt/) and the final model (final/).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import losses, pauses, variants
from . import model as model_lib
from .atomic import atomic_save_dir, atomic_write
from .data import BlockSampler, split_blocks
from .precision import autocast


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
        if self.tokens <= 0 or self.lr <= 0 or self.data_tokens < 0:
            raise ValueError("tokens and lr must be positive and data_tokens >= 0")

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


def step_logits(model, inputs, w, recipe="constant", omega=None, generator=None):
    """Expand (B, T) real tokens with pauses and run the model: logits (B, T, W, V), steps (B, T) or None."""
    if recipe == "variable" and w > 1:
        ex = pauses.expand_variable(
            inputs, w, model.pause_ids, omega, generator=generator, pad_id=model.pad_id
        )
    else:
        ex = pauses.expand_constant(inputs, w, model.pause_ids)
    logits, _ = model(ex.input_ids, position_ids=ex.position_ids, attention_mask=ex.attention_mask)
    return ex.to_steps(logits), (None if ex.constant else ex.steps)


@torch.no_grad()
def evaluate_nll(model, blocks, cfg: TrainConfig, batch_size: int = 16) -> dict:
    """Mean -log p(y) and mean expected pauses over `blocks` (Recipe 1, the model's own stopping)."""
    model.eval()
    how, n = variants.get(cfg.variant).readout, 0
    sums = torch.zeros(2, dtype=torch.float64, device=model.device)  # nll, expected pauses
    for i in range(0, len(blocks), batch_size):
        b = blocks[i : i + batch_size].to(model.device)
        with autocast(model.device, cfg.bf16 and model.device.type == "cuda"):
            logits, _ = step_logits(model, b[:, :-1], cfg.w)
        policy = losses.readout(losses.step_quantities(logits.float(), b[:, 1:], model.dk_id), how)
        k = b[:, 1:].numel()
        sums += torch.stack(
            [-losses.log_p(policy).sum(), losses.expected_pauses(policy.log_s).sum()]
        ).double()
        n += k
    model.train()
    nll, pauses_sum = sums.tolist()  # one CPU-GPU sync
    return {"nll": nll / n, "ppl": math.exp(nll / n), "expected_pauses": pauses_sum / n}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _init_model(cfg: TrainConfig) -> model_lib.CYBModel:
    settings = dict(
        w=cfg.w,
        psi=cfg.psi,
        variant=cfg.variant,
        recipe=cfg.recipe,
        hparams=cfg.hparams,
        mask_pauses=cfg.mask_pauses,
    )
    if cfg.init.startswith("scratch:"):
        from . import tokenizer as tok_lib

        m = model_lib.new_base(
            tok_lib.load(cfg.tokenizer), cfg.init.split(":", 1)[1], seed=cfg.seed
        )
        m = m.with_settings(**settings)
    else:
        m = model_lib.load(cfg.init, **settings)
    if cfg.pause_init == "mean":
        # A pretrained model never saw its pause tokens as input; their rows hold whatever the
        # softmax pushed onto them as (tied) outputs. Start them at the mean real-token embedding.
        emb = m.model.get_input_embeddings().weight
        special = set(m.pause_ids) | {m.dk_id, m.pad_id, m.eot_id}
        real = torch.tensor([i for i in range(emb.shape[0]) if i not in special], device=emb.device)
        with torch.no_grad():
            emb[m.pause_ids] = emb[real].mean(0)
    return m


def _same_config(stored: dict, cfg: TrainConfig) -> bool:
    """A run directory matches cfg; settings added since it was written count at their defaults."""
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    return all(stored.get(k, defaults.get(k)) == v for k, v in asdict(cfg).items()) and set(
        stored
    ) <= set(asdict(cfg))


def train(cfg: TrainConfig, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train (or resume) the run in cfg.out; returns the final summary. `stop_after` simulates a kill."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists() and not _same_config(json.loads(cfg_path.read_text()), cfg):
        raise ValueError(
            f"{out} holds a run with a different config: choose a new --out or delete {out}"
        )
    cfg_path.write_text(json.dumps(asdict(cfg), indent=2))
    if (out / "final" / "summary.json").exists():
        return json.loads((out / "final" / "summary.json").read_text())

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    ckpt = out / "ckpt"
    if not ckpt.exists() and ckpt.with_name("ckpt.old").exists():  # killed between two renames
        ckpt.with_name("ckpt.old").rename(ckpt)
    model = _init_model(cfg) if not ckpt.exists() else model_lib.load(ckpt)
    model.to(device).train()

    blocks = split_blocks(cfg.split, model.tokenizer, cfg.seq_len, cfg.data_root)
    n_val = min(cfg.val_blocks, len(blocks) // 10)
    val, blocks = blocks[:n_val], blocks[n_val:]
    if cfg.data_tokens:
        need = math.ceil(cfg.data_tokens / cfg.seq_len)
        if need > len(blocks):
            raise ValueError(
                f"data_tokens={cfg.data_tokens} exceeds the {len(blocks) * cfg.seq_len} tokens of split {cfg.split!r}"
            )
        blocks = blocks[:need]
    sampler = BlockSampler(blocks, cfg.batch_size, cfg.seed)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    start, elapsed = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt / "state.pt", map_location=device, weights_only=True)
        opt.load_state_dict(state["opt"])
        start, elapsed = state["step"], state["elapsed"]
    log_path = out / "log.jsonl"
    _truncate_log(log_path, start)

    micro = cfg.batch_size // cfg.grad_accum
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        disable=not progress,
        desc=f"{cfg.variant} w={cfg.w}",
        unit="step",
        dynamic_ncols=True,
    )
    t0 = time.perf_counter() - elapsed
    for step in bar:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = sampler.batch(step).to(device)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # Recipe 2 pause counts
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, expected pauses
        for mb in batch.split(micro):
            with autocast(device, cfg.bf16 and device.type == "cuda"):
                logits, steps = step_logits(
                    model, mb[:, :-1], cfg.w, cfg.recipe, cfg.pause_omega, gen
                )
            out_l = losses.compute(
                cfg.variant, logits, mb[:, 1:], model.dk_id, steps=steps, **cfg.loss_hparams
            )
            (out_l.loss / cfg.grad_accum).backward()
            sums += (
                torch.stack([out_l.loss.detach(), out_l.metrics["expected_pauses"]]).double()
                / cfg.grad_accum
            )
        loss_sum, pauses_sum = sums.tolist()  # CPU-GPU sync, once per step
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

        done = step + 1
        record = {
            "step": done,
            "tokens_seen": done * cfg.batch_size * cfg.seq_len,
            "loss": loss_sum,
            "lr": lr,
            "mean_expected_pauses": pauses_sum,
            "elapsed_s": time.perf_counter() - t0,
        }
        if done % cfg.eval_every == 0 or done == cfg.steps:
            record.update({f"val_{k}": v for k, v in evaluate_nll(model, val, cfg).items()})
        with log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{loss_sum:.3f}", pauses=f"{pauses_sum:.2f}", lr=f"{lr:.1e}")
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            _save_ckpt(ckpt, model, opt, done, record["elapsed_s"])
        if stop_after is not None and done >= stop_after and done < cfg.steps:
            return {"stopped_at": done}

    last = json.loads(log_path.read_text().splitlines()[-1])
    summary = {
        "steps": cfg.steps,
        "tokens_seen": last["tokens_seen"],
        "final_loss": last["loss"],
        "val": evaluate_nll(model, val, cfg),
        "elapsed_s": time.perf_counter() - t0,
    }

    def write_final(tmp: Path):
        model.save(tmp)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))

    atomic_save_dir(out / "final", write_final)
    shutil.rmtree(ckpt, ignore_errors=True)
    return summary


def _save_ckpt(path: Path, model, opt, step: int, elapsed: float) -> None:
    def write(tmp: Path):
        model.save(tmp)
        torch.save({"opt": opt.state_dict(), "step": step, "elapsed": elapsed}, tmp / "state.pt")

    atomic_save_dir(path, write)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so the log has each step once."""
    if not path.exists():
        return
    keep = [
        ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step
    ]
    atomic_write(path, lambda p: p.write_text("".join(k + "\n" for k in keep)))
