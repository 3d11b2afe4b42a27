"""One flat training loop for pretraining (no pauses) and CYB fine-tuning.

The budget is counted in *real* (non-pause) tokens so that variants with and
without pauses are compared on equal data. A run directory holds config.json,
log.jsonl, a resumable checkpoint (ckpt/) and the final model (final/).
The config is cyb_core.train_config, the forward pass and validation score cyb_core.forward,
the run directory's checks cyb_core.run_folder, the DDP / FSDP wrapping cyb_core.parallel and
the checkpoints cyb_core.checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed, losses
from . import model as model_lib
from .atomic import atomic_save_dir, atomic_write, recover_dir, remove_dir
from .checkpoint import _full_state_dict, _load_opt, _save_ckpt, _save_model
from .forward import evaluate_nll, step_logits
from .packing import BlockSampler, split_blocks
from .parallel import _checkpoint_activations, _sync_gradients, _wrap
from .precision import autocast, master_weights
from .run_folder import _check_out, _lock_run, _truncate_log
from .train_config import TrainConfig, lr_at, recorded_config, sample_pause_counts


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


def context_check(model: model_lib.CYBModel, cfg: TrainConfig) -> None:
    """ValueError when a sequence of cfg.seq_len real tokens does not fit the model's context
    (checked before anything is written; past it OPT fails mid-step, Falcon trains silently)."""
    ctx, need = model.max_positions, model.positions_needed(cfg.seq_len)
    if ctx is not None and need > ctx:
        raise ValueError(
            f"--seq-len {cfg.seq_len} needs {need} positions but the model's context is {ctx}: "
            f"pass --seq-len {ctx // model.positions_needed(1)} or less"
        )


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
        else distributed.Dist(
            device=distributed.resolve_device(cfg.device, distributed.env_world()[2])
        )
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
    _claim(out, cfg, d, held)
    ckpt, final = out / "ckpt", out / "final"
    finished = _finished(out, ckpt, final, d)
    if finished is not None:
        return finished

    resuming = ckpt.is_dir()
    model = _load_model(cfg, ckpt if resuming else None)
    context_check(model, cfg)
    model.check_window(cfg.seq_len)
    val, blocks = _blocks(cfg, model)
    sampler = BlockSampler(blocks, cfg.batch_size, cfg.seed)

    # ---- the first write: the run directory and its config
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(recorded_config(cfg, d.device), indent=2)
        atomic_write(out / "config.json", lambda p: p.write_text(text))

    torch.manual_seed(cfg.seed)
    net = _place(model, cfg, d, grad_ckpt, fsdp)
    opt = _optimizer(model, cfg, d.device, fsdp)
    start, elapsed = _resume(ckpt, model, opt, d.device, fsdp) if resuming else (0, 0.0)
    log_path = out / "log.jsonl"
    if d.main:
        _truncate_log(log_path, start)

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
        loss_sum, pauses_sum, halting = _step(cfg, d, model, net, opt, sampler, step, micro, fsdp)

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
    return _finish(cfg, d, model, val, fsdp, record, log_path, t0, final, ckpt)


def _resume(ckpt: Path, model, opt, device: torch.device, fsdp: bool) -> tuple[int, float]:
    """Load the optimizer state of the checkpoint; (steps done, seconds spent) so far."""
    # FSDP: the full optimizer state stays in host memory (mapped, not read whole), and
    # each rank moves only its shard to the device (set_optimizer_state_dict)
    where = "cpu" if fsdp else device
    state = torch.load(ckpt / "state.pt", map_location=where, weights_only=True, mmap=True)
    _load_opt(model, opt, state, fsdp)
    return state["step"], state["elapsed"]


def _claim(out: Path, cfg, d: distributed.Dist, held: ExitStack) -> None:
    """Check the run directory, then take its lock (rank 0); every rank raises the same error."""
    err = _check_out(out, cfg, d.device) if d.main else None
    if d.main and err is None:
        err = _lock_run(out, cfg, held, d.device)
    err = distributed.broadcast_object(err)  # every rank raises the same one-line error
    if err:
        raise ValueError(err)


def _finished(out: Path, ckpt: Path, final: Path, d: distributed.Dist) -> dict | None:
    """The summary of a run that already ended, or None; first repairs a killed save."""
    if d.main and out.is_dir():  # leftovers of a killed save (see cyb_core.atomic)
        recover_dir(final)
        recover_dir(ckpt)
    distributed.barrier()
    if (final / "summary.json").exists():
        if d.main:  # killed between writing final/ and removing ckpt/
            remove_dir(ckpt)
        return json.loads((final / "summary.json").read_text())
    return None


def _blocks(cfg, model) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation blocks, training blocks) of the split, the training ones cut to data_tokens."""
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
    return val, blocks


def _place(model, cfg, d: distributed.Dist, grad_ckpt: bool, fsdp: bool):
    """Put the model on the device in training mode; returns the module the forward calls."""
    device = d.device
    master_weights(model).train()  # fp32 weights; bf16 only inside autocast
    if not fsdp:
        model.to(device)
    if grad_ckpt:
        _checkpoint_activations(model.model)
    # under FSDP the weights stay on the CPU until fully_shard moves them, a layer at a time, and
    # keeps this rank's shard: the device never holds the whole model
    net = _wrap(model, d, fsdp, cfg.bf16 and device.type == "cuda")
    model.to(device)  # FSDP: anything left unmanaged; otherwise already there
    return net


def _optimizer(model, cfg, device: torch.device, fsdp: bool) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda" and not fsdp,
    )


def _step(cfg, d: distributed.Dist, model, net, opt, sampler, step, micro, fsdp):
    """One optimiser step over the global batch of `step`: (loss, expected pauses, halting),
    each the mean over the global batch."""
    device = d.device
    rows = cfg.batch_size // d.world  # this rank's rows of every global batch
    mine = slice(d.rank * rows, (d.rank + 1) * rows)
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
                    pause_counts=None if k_local is None else k_local[i * micro : (i + 1) * micro],
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
    return loss_sum, pauses_sum, halting


def _finish(cfg, d: distributed.Dist, model, val, fsdp, record, log_path, t0, final, ckpt) -> dict:
    """Evaluate, write final/ (the model and its summary), drop ckpt/; the summary on every rank."""
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


def _evaluate(model, val, cfg, d: distributed.Dist, fsdp: bool) -> dict:
    # Under FSDP every forward pass is a collective, so every rank scores every block;
    # under DDP the plain module needs no collective and the ranks split the blocks.
    return evaluate_nll(model, val, cfg, sharded=d.active and not fsdp)
