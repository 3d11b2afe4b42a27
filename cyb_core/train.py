"""One flat training loop for pretraining (no pauses) and CYB fine-tuning.

The budget is counted in *real* (non-pause) tokens so that variants with and
without pauses are compared on equal data. A run directory holds config.json,
log.jsonl, a resumable checkpoint (ckpt/) and the final model (final/).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack, nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed, losses, pauses, variants
from . import model as model_lib
from .atomic import (
    FolderBusy,
    atomic_save_dir,
    atomic_write,
    exclusive,
    recover_dir,
    remove_dir,
    write_target,
)
from .packing import BlockSampler, split_blocks
from .precision import autocast, fsdp_policy, master_weights

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


def step_logits(
    model,
    inputs,
    w,
    recipe="constant",
    omega=None,
    generator=None,
    pause_counts=None,
    forward=None,
    prior=True,
):
    """Expand (B, T) real tokens with pauses and run the model: logits (B, T, W, V), steps (B, T) or None.

    Recipe 2 takes its pauses from `pause_counts` (B, T) when given, else draws them from
    `omega` with `generator`. `forward` is the module to call (a DDP/FSDP wrapper of `model`);
    `model` itself supplies the token ids. prior=False: logits without the DK prior, for a loss
    that adds it in fp32 (losses.compute(..., psi=model.settings.psi)).
    """
    if recipe == "variable" and w > 1:
        if pause_counts is not None:
            ex = pauses.expand_with_counts(
                inputs, w, model.pause_ids, pause_counts, pad_id=model.pad_id
            )
        else:
            ex = pauses.expand_variable(
                inputs, w, model.pause_ids, omega, generator=generator, pad_id=model.pad_id
            )
    else:
        ex = pauses.expand_constant(inputs, w, model.pause_ids)
    logits, _ = (forward or model)(
        ex.input_ids, position_ids=ex.position_ids, attention_mask=ex.attention_mask, prior=prior
    )
    return ex.to_steps(logits), (None if ex.constant else ex.steps)


@torch.no_grad()
def evaluate_nll(
    model, blocks, cfg: TrainConfig, batch_size: int = 16, sharded: bool = False
) -> dict:
    """Mean -log p(y) and mean expected pauses over `blocks` (Recipe 1, the model's own stopping).

    `sharded`: every rank of a process group passes the same `blocks`, scores its contiguous
    share and the sums are all-reduced, so each rank returns the result over all of `blocks`.
    """
    if sharded:
        share = distributed.shard_range(len(blocks), *distributed.rank_world())
        blocks = blocks[share.start : share.stop]
    model.eval()
    how = variants.get(cfg.variant).readout
    sums = torch.zeros(3, dtype=torch.float64, device=model.device)  # nll, expected pauses, n
    for i in range(0, len(blocks), batch_size):
        b = blocks[i : i + batch_size].to(model.device)
        with autocast(model.device, cfg.bf16 and model.device.type == "cuda"):
            logits, _ = step_logits(model, b[:, :-1], cfg.w, prior=False)
        # bf16 logits go in as they are: the loss upcasts a chunk at a time, adds the prior in fp32
        q = losses.step_quantities(logits, b[:, 1:], model.dk_id, psi=model.settings.psi)
        policy = losses.readout(q, how)
        sums[:2] += torch.stack(
            [-losses.log_p(policy).sum(), losses.expected_pauses(policy.log_s).sum()]
        ).double()
        sums[2] += b[:, 1:].numel()  # a host number: no tensor made and copied per batch
    model.train()
    if sharded:
        distributed.all_reduce_sum(sums)
    nll, pauses_sum, n = sums.tolist()  # one CPU-GPU sync
    if not n:
        nan = float("nan")
        return {"nll": nan, "ppl": nan, "expected_pauses": nan}
    return {"nll": nll / n, "ppl": math.exp(nll / n), "expected_pauses": pauses_sum / n}


def resolve_device(name: str) -> torch.device:
    return distributed.resolve_device(name, distributed.env_world()[2])


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
        m = model_lib.load(cfg.init, allow_resize=cfg.allow_resize, **settings)
    if cfg.pause_init == "mean":
        # A pretrained model never saw its pause tokens as input; their rows hold whatever the
        # softmax pushed onto them as (tied) outputs. Start them at the mean real-token embedding.
        emb = m.model.get_input_embeddings().weight
        special = set(m.pause_ids) | {m.dk_id, m.pad_id, m.eot_id}
        real = torch.tensor([i for i in range(emb.shape[0]) if i not in special], device=emb.device)
        with torch.no_grad():
            emb[m.pause_ids] = emb[real].mean(0)
    return m


def _load_model(cfg: TrainConfig, ckpt: Path | None) -> model_lib.CYBModel:
    """The resumable checkpoint, else the model cfg.init names; any failure is one ValueError."""
    from safetensors import SafetensorError

    what = f"the checkpoint {ckpt}" if ckpt else f"--init {cfg.init}"
    try:
        return model_lib.load(ckpt) if ckpt else _init_model(cfg)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"cannot load {what}: {first} (pass a checkpoint directory or scratch:<preset>)"
        ) from e


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


def context_check(model: model_lib.CYBModel, cfg: TrainConfig) -> None:
    """ValueError when a sequence of cfg.seq_len real tokens does not fit the model's context
    (checked before anything is written; past it OPT fails mid-step, Falcon trains silently)."""
    ctx, need = model.max_positions, model.positions_needed(cfg.seq_len)
    if ctx is not None and need > ctx:
        raise ValueError(
            f"--seq-len {cfg.seq_len} needs {need} positions but the model's context is {ctx}: "
            f"pass --seq-len {ctx // model.positions_needed(1)} or less"
        )


def _check_out(out: Path, cfg: TrainConfig, device: torch.device | None = None) -> str | None:
    """Why the run directory cannot take this run, or None; reads and probes, writes nothing."""
    cfg_path = out / "config.json"
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a directory: choose another --out"
    if cfg_path.is_file():
        try:
            stored = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{cfg_path} is not a run config: choose a new --out or delete {out}"
        if not isinstance(stored, dict) or not _same_config(stored, cfg, device):
            return f"{out} holds a run with a different config: choose a new --out or delete {out}"
    probe, problem = write_target(out)
    if problem == "file":
        return f"cannot create {out}: {probe} is a file, not a directory; choose another --out"
    if problem == "read-only":
        return f"cannot write to {probe} (read-only): choose another --out or make it writable"
    return None


def _lock_run(
    out: Path, cfg: TrainConfig, held: ExitStack, device: torch.device | None = None
) -> str | None:
    """Take the run folder's lock for the life of the run (one writer per --out; see
    atomic.exclusive), then check the folder again: a run that ended meanwhile may have left
    another config. The error's text, or None."""
    try:
        held.enter_context(exclusive(out))
    except FolderBusy as e:
        return str(e)
    return _check_out(out, cfg, device)  # the same comparison as before the lock


def train(
    cfg: TrainConfig,
    progress: bool = True,
    stop_after: int | None = None,
    *,
    parallel: bool = False,
    grad_ckpt: bool = False,
    fsdp: bool = False,
    collective_timeout: float = distributed.COLLECTIVE_TIMEOUT,
    report_to: str = "none",
) -> dict:
    """Train (or resume) the run in cfg.out; returns the final summary. `stop_after` simulates a kill.

    parallel: join the process group of a launcher (torchrun sets RANK / WORLD_SIZE) and train
    data-parallel: each of the N ranks runs batch_size / N rows of every step, DDP averages the
    gradients, rank 0 alone writes. Without a launcher it is one process, as with False.
    (`cyb experiment` passes False: there the ranks split a grid of runs instead.)
    grad_ckpt: recompute the decoder layers' activations in the backward pass (less memory).
    fsdp: shard parameters, gradients and optimizer state over the ranks (FSDP2) instead of
    replicating them (DDP), for models that do not fit one device.
    collective_timeout: seconds a rank waits for the others in a collective before it fails.
    report_to: a tracker of cyb_core.trackers ("none", "tensorboard", ...) fed every log record.
    """
    from .trackers import Tracker, check

    check(report_to)  # a missing tracker library fails before any work
    created = parallel and not (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    )
    d = (
        distributed.setup(cfg.device, collective_timeout)
        if parallel
        else distributed.Dist(device=resolve_device(cfg.device))
    )
    tracker = Tracker(report_to, Path(cfg.out), recorded_config(cfg, d.device))  # opened lazily
    try:
        with ExitStack() as held:  # the run folder's lock, held until the run returns
            return _train(
                cfg,
                d,
                progress and d.main,
                stop_after,
                grad_ckpt,
                fsdp and d.active,
                held,
                tracker,
            )
    finally:
        tracker.close()
        if created:
            distributed.teardown()


def _train(
    cfg, d: distributed.Dist, progress, stop_after, grad_ckpt, fsdp, held, tracker=None
) -> dict:
    # ---- every check that can fail, before anything is written
    micro = distributed.per_rank(cfg.batch_size, d.world, cfg.grad_accum)
    out = Path(cfg.out)
    err = _check_out(out, cfg, d.device) if d.main else None
    if d.main and err is None:
        err = _lock_run(out, cfg, held, d.device)
    err = distributed.broadcast_object(err)  # every rank raises the same one-line error
    if err:
        raise ValueError(err)
    ckpt, final = out / "ckpt", out / "final"
    if d.main and out.is_dir():  # leftovers of a killed save (see cyb_core.atomic)
        recover_dir(final)
        recover_dir(ckpt)
    distributed.barrier()
    if (final / "summary.json").exists():
        if d.main:  # killed between writing final/ and removing ckpt/
            remove_dir(ckpt)
        return json.loads((final / "summary.json").read_text())

    resuming = ckpt.is_dir()
    model = _load_model(cfg, ckpt if resuming else None)
    context_check(model, cfg)
    model.check_window(cfg.seq_len)
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

    # ---- the first write: the run directory and its config
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(recorded_config(cfg, d.device), indent=2)
        atomic_write(out / "config.json", lambda p: p.write_text(text))

    device = d.device
    torch.manual_seed(cfg.seed)
    master_weights(model).train()  # fp32 weights; bf16 only inside autocast
    if not fsdp:
        model.to(device)
    if grad_ckpt:
        _checkpoint_activations(model.model)
    # under FSDP the weights stay on the CPU until fully_shard moves them, a layer at a time, and
    # keeps this rank's shard: the device never holds the whole model
    net = _wrap(model, d, fsdp, cfg.bf16 and device.type == "cuda")
    model.to(device)  # FSDP: anything left unmanaged; otherwise already there

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda" and not fsdp,
    )
    start, elapsed = 0, 0.0
    if resuming:
        # FSDP: the full optimizer state stays in host memory (mapped, not read whole), and
        # each rank moves only its shard to the device (set_optimizer_state_dict)
        where = "cpu" if fsdp else device
        state = torch.load(ckpt / "state.pt", map_location=where, weights_only=True, mmap=True)
        _load_opt(model, opt, state, fsdp)
        start, elapsed = state["step"], state["elapsed"]
    log_path = out / "log.jsonl"
    if d.main:
        _truncate_log(log_path, start)

    rows = cfg.batch_size // d.world  # this rank's rows of every global batch
    mine = slice(d.rank * rows, (d.rank + 1) * rows)
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        disable=not progress,
        desc=f"{cfg.variant} w={cfg.w}" + (f" x{d.world} ranks" if d.active else ""),
        unit="step",
        dynamic_ncols=True,
    )
    t0 = time.perf_counter() - elapsed
    record = None
    for step in bar:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = sampler.batch(step)  # (batch_size, seq_len + 1), the same on every rank
        counts = sample_pause_counts(cfg, (batch.shape[0], cfg.seq_len), step)
        local = batch[mine].to(device)
        k_local = counts[mine] if counts is not None else None
        # loss and expected pauses, summed over this rank's micro-batches; on the CPU for gloo
        # (2 + W,): loss, expected pauses, then the halting distribution s_0 .. s_{W-1}
        sums = torch.zeros(
            2 + cfg.w, dtype=torch.float64, device=device if d.device.type == "cuda" else "cpu"
        )
        for i, mb in enumerate(local.split(micro)):
            last = i == cfg.grad_accum - 1
            with _sync_gradients(net, model, fsdp, last):
                with autocast(device, cfg.bf16 and device.type == "cuda"):
                    logits, steps = step_logits(
                        model,
                        mb[:, :-1],
                        cfg.w,
                        cfg.recipe,
                        pause_counts=None
                        if k_local is None
                        else k_local[i * micro : (i + 1) * micro],
                        forward=net,
                        prior=False,
                    )
                out_l = losses.compute(
                    cfg.variant,
                    logits,
                    mb[:, 1:],
                    model.dk_id,
                    steps=steps,
                    psi=model.settings.psi,  # the DK prior, added in fp32 by the chunked loss
                    **cfg.loss_hparams,
                )
                # DDP averages gradients over ranks; /grad_accum averages the micro-batches:
                # the mean over equal-sized micro-batches is the mean over the global batch
                del logits  # (B, T, W, V): the loss keeps what backward needs, nothing more
                (out_l.loss / cfg.grad_accum).backward()
            m = out_l.metrics
            sums += (
                torch.cat([out_l.loss.detach()[None], m["expected_pauses"][None], m["halting"]])
                .double()
                .to(sums.device)
                / cfg.grad_accum
            )
        distributed.all_reduce_sum(sums)
        loss_sum, pauses_sum, *halting = (sums / d.world).tolist()  # CPU-GPU sync, once per step
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
            "halting": halting,
            "elapsed_s": time.perf_counter() - t0,
        }
        if done % cfg.eval_every == 0 or done == cfg.steps:
            val_now = _evaluate(model, val, cfg, d, fsdp)
            record.update({f"val_{k}": v for k, v in val_now.items()})
        if d.main:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if tracker is not None:
                tracker.log(record)
        bar.set_postfix(loss=f"{loss_sum:.3f}", pauses=f"{pauses_sum:.2f}", lr=f"{lr:.1e}")
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            _save_ckpt(ckpt, model, opt, done, record["elapsed_s"], d, fsdp)
        if stop_after is not None and done >= stop_after and done < cfg.steps:
            distributed.barrier()  # every rank stops here, after rank 0 saved
            return {"stopped_at": done}
    bar.close()

    val_final = _evaluate(model, val, cfg, d, fsdp)
    summary = None
    if d.main:
        last = record or json.loads(log_path.read_text().splitlines()[-1])
        summary = {
            "steps": cfg.steps,
            "tokens_seen": last["tokens_seen"],
            "final_loss": last["loss"],
            "val": val_final,
            "elapsed_s": time.perf_counter() - t0,
        }
    state_dict = _full_state_dict(model, fsdp)  # collective under FSDP
    if d.main:

        def write_final(tmp: Path):
            _save_model(model, tmp, state_dict)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2))

        atomic_save_dir(final, write_final)
        remove_dir(ckpt)
    summary = distributed.broadcast_object(summary)
    distributed.barrier()  # final/ exists for every rank when train() returns
    return summary


def _checkpoint_activations(hf_model) -> None:
    """Recompute every decoder layer's activations in the backward pass (non-reentrant: DDP-safe)."""
    kw = {"use_reentrant": False}
    if hasattr(hf_model, "activation_checkpointing_enable"):  # transformers >= 5.x
        hf_model.activation_checkpointing_enable(kw)
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)


def _wrap(model, d: distributed.Dist, fsdp: bool, bf16: bool):
    """The module each training forward pass calls: the model, or DDP / FSDP2 over it."""
    if not d.active:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        policy = fsdp_policy(bf16)
        kw = {"mp_policy": policy} if policy is not None else {}
        # one unit per decoder layer, then the root (embeddings, tied head, final norm)
        for layer in getattr(getattr(model.model, "model", None), "layers", []):
            fully_shard(layer, **kw)
        fully_shard(model.model, **kw)
        return model  # FSDP2 shards in place: the model's own forward gathers the layers
    from torch.nn.parallel import DistributedDataParallel

    ids = [d.device.index] if d.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _sync_gradients(net, model, fsdp: bool, sync: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if fsdp:
        model.model.set_requires_gradient_sync(sync)
        return nullcontext()
    if sync or not hasattr(net, "no_sync"):
        return nullcontext()
    return net.no_sync()


def _evaluate(model, val, cfg, d: distributed.Dist, fsdp: bool) -> dict:
    # Under FSDP every forward pass is a collective, so every rank scores every block;
    # under DDP the plain module needs no collective and the ranks split the blocks.
    return evaluate_nll(model, val, cfg, sharded=d.active and not fsdp)


def _full_state_dict(model, fsdp: bool) -> dict | None:
    """Under FSDP the full (unsharded) weights on the CPU, gathered from every rank; else None."""
    if not fsdp:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model.model, options=opts)
    if getattr(model.model.config, "tie_word_embeddings", False):  # saved once, as a plain save
        for key in getattr(model.model, "_tied_weights_keys", None) or ():
            state.pop(key, None)
    return state


def _save_model(model, path: Path, state_dict: dict | None) -> None:
    if state_dict is None:
        model.save(path)
        return
    path.mkdir(parents=True, exist_ok=True)
    model.model.config.cyb = asdict(model.settings)
    model.model.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
    model.tokenizer.save_pretrained(path)


def _save_ckpt(path: Path, model, opt, step: int, elapsed: float, d=None, fsdp=False) -> None:
    """Rank 0 writes the checkpoint (weights + optimizer state); gathers under FSDP first."""
    state_dict, opt_state = _full_state_dict(model, fsdp), None
    if fsdp:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        opt_state = get_optimizer_state_dict(model.model, opt, options=opts)
    if d is not None and not d.main:
        return

    def write(tmp: Path):
        _save_model(model, tmp, state_dict)
        state = {"step": step, "elapsed": elapsed}
        state["opt_full" if fsdp else "opt"] = opt_state if fsdp else opt.state_dict()
        torch.save(state, tmp / "state.pt")

    atomic_save_dir(path, write)


def _load_opt(model, opt, state: dict, fsdp: bool) -> None:
    key = "opt_full" if fsdp else "opt"
    if key not in state:
        raise ValueError(
            "the checkpoint was written "
            + (
                "without --fsdp: resume it without --fsdp"
                if fsdp
                else "with --fsdp: resume it with --fsdp"
            )
        )
    if not fsdp:
        opt.load_state_dict(state["opt"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model.model, opt, state["opt_full"], options=StateDictOptions(full_state_dict=True)
    )


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so the log has each step once.

    A line torn by a kill mid-write (only the last can be) is not JSON and is dropped too.
    """
    if not path.exists():
        return
    keep = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            keep.append(ln)
    atomic_write(path, lambda p: p.write_text("".join(k + "\n" for k in keep)))
