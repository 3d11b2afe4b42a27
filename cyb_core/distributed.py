"""Data parallelism on torch.distributed: process-group setup, rank helpers, sharding.

A launcher (`torchrun`, `accelerate launch`, or `spawn` in the tests) starts one process per
device and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. `setup` joins the
process group (NCCL on CUDA, gloo on the CPU) and picks the process's device; without those
variables, or with WORLD_SIZE=1, everything here is a no-op and the code runs as one process.

Work is defined globally and sharded by rank, so N processes reproduce one process with the
same global batch up to the order of float reductions: `shard_range` gives each rank a
contiguous slice, and `all_reduce_sum` adds the per-rank sums.
"""

from __future__ import annotations

import atexit
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Seconds a collective may wait for the other ranks before this rank gives up. torch's default
# (30 min) lets one hung rank stall the others for half an hour; a step takes seconds.
COLLECTIVE_TIMEOUT = 300


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank among `world` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints, final models and evaluations."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) without one."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """cpu, cuda, cuda:N, mps or auto; any CUDA device under a launcher is GPU `local_rank`
    (default: the launcher's LOCAL_RANK; `cuda:0` given to every rank of torchrun would put them
    all on one GPU).

    A device this machine lacks is refused here, before any work (ValueError naming the fix).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cpu" and torch.version.cuda is None and os.path.exists(_NVIDIA_DRIVER):
            _warn_cpu_only_torch()
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: expected cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda" and torch.version.cuda is None and torch.version.hip is None:
        raise ValueError(
            f"--device {name}: no such CUDA device here, this torch ({torch.__version__}) is a "
            "CPU-only build: install a CUDA build (make install-gpu, docs/scaling.md) or use "
            "--device cpu"
        )
    if dev.type == "cuda" and env_world()[1] > 1:
        dev = torch.device("cuda", env_world()[2] if local_rank is None else local_rank)
    if dev.type == "cuda" and (
        not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()
    ):
        raise ValueError(f"--device {name}: no such CUDA device here; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")
    return dev


_NVIDIA_DRIVER = "/proc/driver/nvidia/version"
_warned_cpu_only = []


def _warn_cpu_only_torch() -> None:
    """An NVIDIA driver with a CPU-only torch: --device auto would quietly run on the CPU."""
    if not _warned_cpu_only:
        _warned_cpu_only.append(True)
        print(
            f"warning: this machine has an NVIDIA GPU but torch {torch.__version__} is a "
            "CPU-only build, so --device auto runs on the CPU: make install-gpu installs a "
            "CUDA build",
            file=sys.stderr,
        )


def setup(device: str = "auto", timeout: float = COLLECTIVE_TIMEOUT) -> Dist:
    """Join the launcher's process group (once per process) and return this process's place.

    Safe to call more than once (the group is kept) and with no launcher (one process).
    timeout: seconds a collective waits for the other ranks; then it raises on this rank
    (`is_timeout` recognises the error), so a hung rank ends the run instead of stalling it.
    """
    if not timeout > 0:
        raise ValueError(f"collective timeout must be above 0 seconds, got {timeout}")
    rank, world, local = env_world()
    dev = resolve_device(device, local)
    if world <= 1:
        return Dist(0, 1, 0, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout),
            device_id=dev if dev.type == "cuda" else None,  # NCCL binds this rank to its GPU
        )
        atexit.register(teardown)  # a caller that does not leave the group leaves it at exit
    return Dist(rank, world, local, dev)


def is_timeout(e: BaseException) -> bool:
    """Whether `e` is a collective that gave up waiting for another rank (gloo or NCCL)."""
    dist_error = getattr(dist, "DistError", ())
    text = str(e).lower()
    return isinstance(e, RuntimeError) and (
        "timed out" in text or "timeout" in text or isinstance(e, dist_error)
    )


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for one process); e.g. rank 0 has written, others may read."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum `x` over the ranks in place and return it (no-op for one process).

    gloo cannot reduce on a GPU and NCCL only there, so the tensor stays where the backend wants
    it: callers pass tensors on their own device (NCCL) or the CPU (gloo).
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank (no-op for one process), e.g. an error to raise everywhere."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def shard_range(n: int, rank: int, world: int) -> range:
    """Contiguous slice of n items for `rank`: sizes differ by at most one, ranks in order."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def per_rank(global_batch: int, world: int, grad_accum: int) -> int:
    """Rows of one micro-batch on one rank: global batch / (world * grad_accum), exactly."""
    if global_batch % (world * grad_accum):
        raise ValueError(
            f"batch size {global_batch} is not divisible by {world} processes x {grad_accum} "
            f"micro-batches: choose --batch-size a multiple of {world * grad_accum}"
        )
    return global_batch // (world * grad_accum)


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the joined process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_eval(score, model, texts: list[str], progress: bool = True, **kw):
    """Score documents split over the ranks; rank 0 gets the whole result, the others None.

    `score(model, texts, progress=..., **kw)` returns a `cyb_core.eval_result.EvalResult` (e.g.
    `dense_eval`). Each rank scores a contiguous share of the documents; rank 0 gathers the
    shares, shifts their document indices back and concatenates them in document order, so
    the result equals one process scoring all documents. Without a process group: `score` itself.
    """
    import numpy as np

    from .eval_result import EvalResult

    rank, world = rank_world()
    if world == 1:
        return score(model, texts, progress=progress, **kw)
    share = shard_range(len(texts), rank, world)
    part = None
    if len(share):  # fewer documents than ranks: this rank has none
        result = score(
            model, texts[share.start : share.stop], progress=progress and rank == 0, **kw
        )
        part = {k: v for k, v in vars(result).items()}
        part["doc"] = part["doc"] + share.start
    parts = [None] * world if rank == 0 else None
    # our own ranks' arrays, pickled by torch's object collective (host memory, one message each)
    dist.gather_object(part, parts, dst=0)
    if rank != 0:
        return None
    parts = [p for p in parts if p is not None]
    return EvalResult(
        **{
            k: (None if parts[0][k] is None else np.concatenate([p[k] for p in parts]))
            for k in parts[0]
        }
    )
