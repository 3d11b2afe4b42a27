"""Training and dense-evaluation benchmark: ratios measured side by side in one process.

Prints one `name: value` line per figure:
- cyb-ap vs tbys (same W) training step time and autograd memory on the same expanded batch;
- dense-evaluation throughput relative to a plain forward pass over the same expanded batch;
- peak memory of the loss on a Gemma-sized (256k) vocabulary, measured in a child process.
Run: `make bench` or `python benchmarks/bench_train.py --help`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cyb_core import losses, pauses  # noqa: E402
from cyb_core import model as model_lib  # noqa: E402
from cyb_core import tokenizer as tok_lib  # noqa: E402
from cyb_core.dense import dense_eval  # noqa: E402


def load_model(device):
    base = ROOT / "data" / "base"
    if (base / "config.json").exists():
        return model_lib.load(base, device=device)
    return model_lib.new_base(tok_lib.load(ROOT / "data" / "tokenizer"), "small").to(device)


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while `fn` runs."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def train_step(m, opt, ex, targets, variant, w):
    logits, _ = m(ex.input_ids, position_ids=ex.position_ids, attention_mask=ex.attention_mask)
    out = losses.compute(variant, ex.to_steps(logits), targets, m.dk_id)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def bench_train(m, device, batch, seq_len, w, rounds):
    ids = torch.randint(10, m.vocab_size, (batch, seq_len + 1), device=device)
    ex = pauses.expand_constant(ids[:, :-1], w, m.pause_ids)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    times = {"tbys": [], "cyb-ap": []}
    for r in range(rounds + 1):  # round 0 warms up; then A/B/A/B
        for variant in ("tbys", "cyb-ap"):
            dt = timed(lambda v=variant: train_step(m, opt, ex, ids[:, 1:], v, w), device)
            if r:
                times[variant].append(dt)
    mem = {}
    for variant in ("tbys", "cyb-ap"):

        def fwd(v=variant):
            logits, _ = m(
                ex.input_ids, position_ids=ex.position_ids, attention_mask=ex.attention_mask
            )
            return losses.compute(v, ex.to_steps(logits), ids[:, 1:], m.dk_id).loss

        mem[variant], loss = saved_bytes(fwd)
        loss.backward()
        opt.zero_grad(set_to_none=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"train_step_s_tbys: {med['tbys']:.4f}")
    print(f"train_step_s_cyb_ap: {med['cyb-ap']:.4f}")
    print(f"train_time_ratio_cyb_ap_over_tbys: {med['cyb-ap'] / med['tbys']:.3f}  (target <= 1.05)")
    print(f"train_autograd_mb_tbys: {mem['tbys'] / 2**20:.1f}")
    print(f"train_autograd_mb_cyb_ap: {mem['cyb-ap'] / 2**20:.1f}")
    print(
        f"train_memory_ratio_cyb_ap_over_tbys: {mem['cyb-ap'] / mem['tbys']:.3f}  (target <= 1.10)"
    )


@torch.no_grad()
def bench_eval(m, device, batch, seq_len, w, rounds):
    m.with_settings(w=w, variant="cyb-ap").eval()
    ids = torch.randint(10, m.vocab_size, (batch, seq_len + 1))
    docs = [m.tokenizer.decode(row) for row in ids.tolist()]
    # the evaluator re-tokenises; build the plain batch from the same windows it will see
    enc = [m.tokenizer(d, add_special_tokens=False)["input_ids"][:seq_len] for d in docs]
    n = min(len(e) for e in enc)
    docs = [m.tokenizer.decode(e[:n]) for e in enc]
    plain = torch.tensor(
        [m.tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs], device=device
    )
    ex = pauses.expand_constant(plain, w, m.pause_ids)

    def forward():
        m(ex.input_ids, position_ids=ex.position_ids, attention_mask=ex.attention_mask)

    t_plain, t_dense = [], []
    for r in range(rounds + 1):
        a = timed(forward, device)
        b = timed(
            lambda: dense_eval(m, docs, seq_len=n + 1, batch_size=batch, progress=False), device
        )
        if r:
            t_plain.append(a)
            t_dense.append(b)
    a, b = sorted(t_plain)[rounds // 2], sorted(t_dense)[rounds // 2]
    print(f"dense_eval_tokens_per_s: {plain.numel() / b:.0f}")
    print(f"plain_forward_tokens_per_s: {plain.numel() / a:.0f}")
    print(f"dense_eval_throughput_ratio: {a / b:.3f}  (target >= 0.9)")


def _hwm() -> int:
    """Peak resident bytes of this process image (VmHWM; unlike ru_maxrss it is not inherited over exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def big_vocab_child(vocab: int, tokens: int, w: int) -> None:
    """Loss forward+backward on bf16 logits (1, tokens, w, vocab); print peak RSS growth."""
    torch.manual_seed(0)
    targets = torch.randint(10, vocab, (1, tokens))
    base = _hwm()
    logits = torch.empty(1, tokens, w, vocab, dtype=torch.bfloat16)
    for rows in logits.view(-1, vocab).split(16):  # filled in slices: no full-size temporary
        rows.normal_(0, 3)
    logits.requires_grad_()
    out = losses.compute("cyb-ap", logits, targets, dk_id=2)
    out.loss.backward()
    peak = _hwm() - base - logits.numel() * 2
    print(f"{logits.numel() * 2} {peak}")


def bench_big_vocab(vocab, tokens, w):
    out = subprocess.run(
        [sys.executable, __file__, "--big-vocab-child", str(vocab), str(tokens), str(w)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    logits_bytes, peak = int(out[0]), int(out[1])
    fp32_copy = logits_bytes * 2
    print(
        f"big_vocab_logits_mb_bf16: {logits_bytes / 2**20:.0f}  (vocab {vocab}, {tokens} tokens x W={w})"
    )
    print(
        f"big_vocab_loss_peak_extra_mb: {peak / 2**20:.0f}  (includes the bf16 gradient of the logits; "
        f"a full fp32 log-softmax alone would add {fp32_copy / 2**20:.0f})"
    )
    print(f"big_vocab_peak_over_logits: {peak / logits_bytes:.2f}")


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size", type=int, default=8, help="sequences per batch (default: %(default)s)"
    )
    p.add_argument(
        "--seq-len", type=int, default=128, help="real tokens per sequence (default: %(default)s)"
    )
    p.add_argument("--w", type=int, default=4, help="steps per real token (default: %(default)s)")
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="timed A/B rounds, median reported (default: %(default)s)",
    )
    p.add_argument(
        "--vocab",
        type=int,
        default=256_000,
        help="vocabulary of the big-vocabulary memory check (default: %(default)s)",
    )
    p.add_argument("--big-vocab-child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.big_vocab_child:
        big_vocab_child(*args.big_vocab_child)
        return
    torch.manual_seed(0)
    device = torch.device(args.device)
    m = load_model(device)
    print(
        f"device: {device}  threads: {torch.get_num_threads()}  params: {model_lib.n_params(m) / 1e6:.1f}M"
    )
    bench_train(m, device, args.batch_size, args.seq_len, args.w, args.rounds)
    bench_eval(m, device, args.batch_size, args.seq_len, args.w, args.rounds)
    bench_big_vocab(args.vocab, args.seq_len, args.w)


if __name__ == "__main__":
    main()
