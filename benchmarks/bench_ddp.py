"""Data-parallel training throughput: `cyb train` under torchrun with 1, 2, ... processes.

Every run trains the same model from scratch on the same global batch (so the same data and
result, see tests/test_distributed.py); only the number of processes differs. Throughput is real
(non-pause) training tokens per second between the first and the last step of the log, which
leaves out start-up, the first step's warm-up and the final evaluation and save. On a CPU the
processes split the cores (OMP_NUM_THREADS = cores / processes), so the comparison uses the same
hardware; on GPUs each process takes one device.

Prints one line per process count and the speed-up over the first, side by side:
    python benchmarks/bench_ddp.py                         # CPU, gloo, 1 vs 2 processes
    python benchmarks/bench_ddp.py --device cuda --procs 1,2,4 --preset medium --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(nproc: int, args, out: Path) -> dict:
    steps = args.steps
    cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", str(BIN / "cyb")]
    cmd += ["train", "--out", str(out), "--init", f"scratch:{args.preset}"]
    cmd += ["--data-root", args.data_root, "--split", "finetune", "--device", args.device]
    cmd += ["--variant", args.variant, "--w", str(args.w), "--seq-len", str(args.seq_len)]
    cmd += ["--batch-size", str(args.batch_size), "--grad-accum", str(args.grad_accum)]
    cmd += ["--tokens", str(steps * args.batch_size * args.seq_len)]
    cmd += ["--eval-every", str(steps + 1), "--ckpt-every", str(steps + 1)]
    cmd += [*(["--grad-ckpt"] if args.grad_ckpt else []), *(["--fsdp"] if args.fsdp else [])]
    env = dict(os.environ)
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(args.threads or max(1, (os.cpu_count() or 1) // nproc))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{nproc} processes failed:\n{r.stderr[-3000:]}")
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    # steps 2 .. steps-1: past the first step's warm-up, before the final evaluation
    a, b = log[0], log[-2]
    tokens = b["tokens_seen"] - a["tokens_seen"]
    summary = json.loads((out / "final" / "summary.json").read_text())
    return {
        "tokens_per_s": tokens / (b["elapsed_s"] - a["elapsed_s"]),
        "final_loss": summary["final_loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--procs", default="1,2", help="process counts, comma-separated (default: %(default)s)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--preset", default="small", help="model preset (default: %(default)s)")
    p.add_argument("--variant", default="cyb-ap", help="loss variant (default: %(default)s)")
    p.add_argument("--w", type=int, default=4, help="steps per real token (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch (default: %(default)s)")
    p.add_argument("--grad-accum", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--steps", type=int, default=12, help="optimiser steps (default: %(default)s)")
    p.add_argument(
        "--rounds", type=int, default=1, help="runs per process count (default: %(default)s)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads per process; 0 = cores / processes (default: %(default)s)",
    )
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing")
    p.add_argument("--fsdp", action="store_true", help="FSDP2 instead of DDP")
    p.add_argument(
        "--data-root",
        default=str(ROOT / "data" / "fixture"),
        help="corpus with a finetune split (default: the test fixture)",
    )
    args = p.parse_args()
    if args.steps < 3:
        p.error("--steps must be at least 3 (the first and last are left out)")
    procs = [int(x) for x in args.procs.split(",")]
    print(
        f"cyb train, scratch:{args.preset}, {args.variant} w={args.w}, global batch "
        f"{args.batch_size} x {args.seq_len} real tokens, {args.steps} steps, {args.device}, "
        f"{os.cpu_count()} cores, {args.threads or 'cores / processes'} threads per process"
    )
    results: dict[int, list[dict]] = {n: [] for n in procs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):  # interleaved (1, 2, 1, 2, ...) so load drift hits both
            for n in procs:
                results[n].append(run(n, args, Path(tmp) / f"p{n}-r{r}"))
    speed = {n: statistics.median(x["tokens_per_s"] for x in results[n]) for n in procs}
    for n in procs:
        print(
            f"processes={n}: {speed[n]:9.0f} tokens/s (median of {args.rounds})  "
            f"speed-up {speed[n] / speed[procs[0]]:5.2f}x  "
            f"final loss {results[n][0]['final_loss']:.6f}"
        )


if __name__ == "__main__":
    main()
