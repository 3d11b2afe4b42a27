"""The first run on a GPU, in one command: `make gpu-check` (python benchmarks/gpu_check.py).

1. The environment: torch build, CUDA version, GPUs.
2. Every `gpu` test (tests/test_gpu.py and the gpu tests of tests/test_generate.py): training,
   bf16 vs fp32 losses, --mask-pauses, dense and adaptive evaluation, Recipe 2 training,
   resuming onto a GPU, syncs per token; with --nproc 2 and two GPUs, DDP and FSDP over NCCL.
3. Timings in bf16 on the `medium` preset and a 0.5B-shaped random model (Qwen2-0.5B's shape):
   training step, dense evaluation, Recipe 1 and Recipe 2 generation, host syncs of Recipe 2
   generation, peak memory, and the bf16-vs-fp32 loss gap against its bound; one table.

Sized for under 8 minutes on one H200. Without CUDA it runs its CPU-safe parts (the host-sync,
bf16 and memory proxies of tests/test_gpu_readiness.py, and the table for the tiny preset on
the CPU) and prints one `skipped:` line per CUDA part. Exit status 0 when every part that ran
passed. Run `python benchmarks/gpu_check.py --help` for the options.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from cyb_core import engine, losses, pauses  # noqa: E402
from cyb_core import model as model_lib  # noqa: E402
from cyb_core import tokenizer as tok_lib  # noqa: E402
from cyb_core.dense import dense_eval  # noqa: E402
from cyb_core.forward import step_logits  # noqa: E402

# Qwen2-0.5B's shape as a Llama (random init, tied embeddings, its padded 151936 vocabulary)
HALF_B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
)
W = 4  # steps per token in every timing
MIN_TRANSFORMERS = (5, 24)  # pyproject.toml: the mask and cache APIs the model relies on


def say(line: str = "") -> None:
    print(line, flush=True)


def environment() -> bool:
    cuda = torch.cuda.is_available()
    build = torch.version.cuda or "none (CPU-only build)"
    say(f"torch {torch.__version__}, CUDA build: {build}, GPUs: {torch.cuda.device_count()}")
    say(f"transformers {transformers.__version__}, Python {sys.version.split()[0]}")
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        say(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB")
    if not cuda and torch.version.cuda is None:
        say("  (a GPU machine needs a CUDA torch first: make install-gpu)")
    return cuda


def run_pytest(args: list[str], timeout: float) -> bool:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    say("$ " + " ".join(cmd[2:]))
    try:
        # the project on the path, installed or not (a lent machine's own Python)
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        p = subprocess.run(cmd, cwd=ROOT, timeout=timeout, env={**os.environ, "PYTHONPATH": path})
    except subprocess.TimeoutExpired:
        say(f"FAILED: the tests ran past {timeout:.0f} s")
        return False
    return p.returncode == 0


def gpu_tests(nproc: int, timeout: float) -> bool:
    n = torch.cuda.device_count()
    select = ["-m", "gpu", "tests/test_gpu.py", "tests/test_generate.py"]
    if nproc < 2:
        select += ["-k", "not nccl"]
        say("skipped: DDP/FSDP over NCCL (pass --nproc 2 on a machine with two GPUs)")
    elif n < 2:
        say(f"skipped: DDP/FSDP over NCCL need 2 GPUs, this machine has {n}")
    return run_pytest(select, timeout)


def cpu_proxies(timeout: float) -> bool:
    """The default suite's stand-ins for the GPU checks (host conversions, bf16, memory)."""
    return run_pytest(["tests/test_gpu_readiness.py"], timeout)


# ----------------------------------------------------------------------------- timings


def build(name: str, tokenizer, device) -> model_lib.CYBModel:
    if name == "0.5B":
        cfg = LlamaConfig(**HALF_B, max_position_embeddings=4096, tie_word_embeddings=True)
        torch.manual_seed(0)
        with torch.device(device):
            m = model_lib.CYBModel(AutoModelForCausalLM.from_config(cfg), tokenizer)
    else:
        m = model_lib.new_base(tokenizer, name, max_positions=4096).to(device)
    return m.with_settings(w=W, variant="cyb-ap")


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, rounds: int) -> float:
    """Median seconds of `rounds` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def bf16_gap(m, device, batch: int, seq_len: int) -> tuple[float, float]:
    """Largest per-token |loss_bf16 - loss_fp32| of cyb-ap and its bound 2 (W + 1) delta
    (tests/test_gpu_readiness.py), delta the largest logit error of bf16 autocast."""
    ids = torch.randint(10, m.n_tokens - 20, (batch, seq_len + 1), device=device)
    ex = pauses.expand_constant(ids[:, :-1], W, m.pause_ids)
    kw = dict(position_ids=ex.position_ids, attention_mask=ex.attention_mask, prior=False)
    with torch.no_grad():
        z32, _ = m(ex.input_ids, **kw)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            z16, _ = m(ex.input_ids, **kw)
        delta = (z16.float() - z32).abs().max().item()
        a = losses.compute("cyb-ap", ex.to_steps(z32), ids[:, 1:], m.dk_id, psi=0.9)
        b = losses.compute("cyb-ap", ex.to_steps(z16), ids[:, 1:], m.dk_id, psi=0.9)
    return (a.per_token - b.per_token).abs().max().item(), 2 * (W + 1) * delta


def r2_syncs(m, prompt: str, n: int) -> tuple[int, int]:
    """(tokens, host syncs CUDA's sync debug mode reports) of one Recipe 2 generation."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gens = engine.generate(
                m,
                [prompt],
                recipe="variable",
                max_new_tokens=n,
                bf16=True,
                do_sample=True,
                readout="sample",
            )
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return len(gens[0].token_ids), sum("synchroniz" in str(w.message) for w in caught)


def time_model(name: str, tokenizer, device, sizes: dict, rounds: int) -> dict:
    m = build(name, tokenizer, device)
    row = {"model": name, "params": sum(p.numel() for p in m.model.parameters())}
    B, T = sizes["batch"], sizes["seq_len"]
    bf16 = device.type == "cuda"

    # one training step as the trainer runs it: bf16 autocast, the chunked loss, fused AdamW
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5, fused=device.type == "cuda")
    x = torch.randint(10, m.n_tokens - 20, (B, T + 1), device=device)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, steps = step_logits(m, x[:, :-1], W, prior=False)
        out = losses.compute("cyb-ap", logits, x[:, 1:], m.dk_id, steps=steps, psi=0.9)
        del logits
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s = timed(train_step, device, rounds)
    row["step_ms"] = 1000 * step_s
    row["train_tok_s"] = B * T / step_s
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    opt.state.clear()  # free the optimizer state before evaluation
    m.eval()

    # dense evaluation of B windows of T tokens
    docs = [tokenizer.decode(r) for r in torch.randint(10, 8000, (B, T)).tolist()]
    n_tok = []

    def dense():
        n_tok.append(
            len(dense_eval(m, docs, seq_len=T, batch_size=B, bf16=bf16, progress=False).nll)
        )

    seconds = timed(dense, device, rounds)
    row["dense_tok_s"] = n_tok[-1] / seconds
    # generation: B one-word prompts, `new` tokens each, sampled, DK drawn with probability d
    prompts = ["The", "It", "In", "She", "A", "When", "He", "There"][:B]
    new = sizes["new_tokens"]
    for recipe, key in (("constant", "r1_tok_s"), ("variable", "r2_tok_s")):
        got = []

        def gen(recipe=recipe, got=got):
            gens = engine.generate(
                m,
                prompts,
                recipe=recipe,
                max_new_tokens=new,
                bf16=bf16,
                do_sample=True,
                readout="sample",
            )
            got.append(sum(len(g.token_ids) for g in gens))

        seconds = timed(gen, device, max(1, rounds // 2))
        row[key] = got[-1] / seconds
    if device.type == "cuda":  # host syncs of Recipe 2 generation, per extra token
        got = {}
        for n in (16, 80):
            got[n] = r2_syncs(m, prompts[0], n)
        row["r2_syncs"] = got[80][1]
        row["r2_tokens"] = got[80][0]
        row["r2_syncs_per_tok"] = (got[80][1] - got[16][1]) / max(1, got[80][0] - got[16][0])
    row["bf16_gap"], row["bf16_bound"] = bf16_gap(m, device, min(B, 4), min(T, 128))
    return row


def table(rows: list[dict]) -> str:
    cols = [
        ("model", "model", "{}"),
        ("params", "params", "{:.3g}"),
        ("step_ms", "train step ms", "{:.1f}"),
        ("train_tok_s", "train tok/s", "{:.0f}"),
        ("peak_gib", "peak GiB", "{:.2f}"),
        ("dense_tok_s", "dense tok/s", "{:.0f}"),
        ("r1_tok_s", "R1 gen tok/s", "{:.0f}"),
        ("r2_tok_s", "R2 gen tok/s", "{:.0f}"),
        ("r2_syncs", "R2 syncs/80 tok", "{}"),
        ("r2_syncs_per_tok", "R2 syncs/extra tok", "{:.3f}"),
        ("bf16_gap", "bf16 gap", "{:.3g}"),
        ("bf16_bound", "bound", "{:.3g}"),
    ]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    cells = [[h for _, h, _ in cols]] + [
        [f.format(r[k]) if k in r else "-" for k, _, f in cols] for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def timings(cuda: bool, rounds: int) -> bool:
    tokenizer = tok_lib.load(ROOT / "data" / "tokenizer")
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        plan = [("medium", dict(batch=8, seq_len=512, new_tokens=64))]
        plan += [("0.5B", dict(batch=8, seq_len=512, new_tokens=64))]
    else:
        say("skipped: timings of the medium preset and the 0.5B model (CUDA only); the tiny")
        say("  preset on the CPU instead, in fp32 (CPU autocast is slower than fp32 there)")
        plan = [("tiny", dict(batch=2, seq_len=32, new_tokens=16))]
    rows, ok = [], True
    for name, sizes in plan:
        t = time.perf_counter()
        row = time_model(name, tokenizer, device, sizes, rounds)
        rows.append(row)
        if cuda:
            torch.cuda.empty_cache()  # the model is gone: its memory back for the next one
        say(f"  {name}: timed in {time.perf_counter() - t:.0f} s")
        if not row["bf16_gap"] <= row["bf16_bound"]:
            say(f"FAILED: {name} bf16 gap {row['bf16_gap']:.3g} over its bound")
            ok = False
        if "r2_syncs_per_tok" in row and not row["r2_syncs_per_tok"] < 1 / 4:
            say(f"FAILED: {name} Recipe 2 made {row['r2_syncs_per_tok']:.2f} syncs per token")
            ok = False
        if not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
            say(f"FAILED: {name} has a non-finite figure")
            ok = False
    say()
    say(table(rows))
    say(
        "tok/s: real tokens per second (training: batch x seq_len per step, W = 4); bf16 gap: "
        "largest per-token |cyb-ap loss bf16 - fp32|, bound 2 (W + 1) x largest logit error; "
        "R2 syncs/extra tok: syncs of an 80-token Recipe 2 generation minus a 16-token one, "
        "per extra token (setup copies cancel)"
    )
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=1, choices=[1, 2], help="2: NCCL tests too")
    p.add_argument("--rounds", type=int, default=3, help="timed calls per figure (median)")
    p.add_argument("--skip-tests", action="store_true", help="timings only")
    p.add_argument("--skip-timings", action="store_true", help="tests only")
    p.add_argument("--test-timeout", type=float, default=300, help="seconds (default 300)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    cuda = environment()
    have = tuple(int(x) for x in transformers.__version__.split(".")[:2])
    if have < MIN_TRANSFORMERS:
        need = ".".join(map(str, MIN_TRANSFORMERS))
        say(
            f"FAILED: transformers {transformers.__version__} is older than the {need} the "
            "project needs (pyproject.toml): install it, or carry its wheel (docs/scaling.md)"
        )
        return 1
    results = {}
    if not args.skip_tests:
        say("\n== gpu tests ==")
        if cuda:
            results["gpu tests"] = gpu_tests(args.nproc, args.test_timeout)
        else:
            say("skipped: every `gpu` test and NCCL (no CUDA device); the CPU proxies instead")
            results["CPU proxies"] = cpu_proxies(args.test_timeout)
    if not args.skip_timings:
        say("\n== timings (bf16 on CUDA) ==")
        results["timings"] = timings(cuda, args.rounds)
    say(f"\n== {time.perf_counter() - t0:.0f} s ==")
    for part, ok in results.items():
        say(f"{part}: {'pass' if ok else 'FAIL'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
