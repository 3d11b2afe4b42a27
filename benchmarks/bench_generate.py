"""Generation benchmark: pause-aware decoding against plain cached decoding, side by side in one process.

Prints one `name: value` line per figure. Every row starts from a one-token prompt, so each
forward step of a row belongs to an emitted token: its own step or one of the pauses before it.
- plain cached greedy decoding (W = 1) vs Recipe 1 generation (W-1 pauses after every token,
  one W-position block per cached forward call): time per real token and the ratio (target <= 2.0);
- Recipe 2 adaptive decoding (DK drawn with probability d_i): time per real token divided by
  (1 + mean pauses) x the plain per-step time (target <= 1.15); the time per step of the
  batch's slowest row over the plain step is printed too; and where the ratio comes from, as
  three factors: a Recipe 2 step over a plain step whose cache grew as long (plain decoding for
  as many steps as Recipe 2's slowest row took; below 1 where finished rows have left the
  batch), the slowest row's steps over the mean (rows that pause more run longer), and the
  plain step at that cache length over the plain step at --new-tokens (pauses take cache
  positions, so attention reads more keys);
- KV cache vs recomputing the whole sequence at every step, for Recipe 1 generation;
- Recipe 1 sampled through every `transformers` logits processor the engine uses (repetition
  penalty, temperature, top-k, top-p, min-p) and with two stop strings that never match (the
  on-device StopStringCriteria runs after every token), each over greedy Recipe 1.
Uses data/base if it exists, else a freshly initialised "small" model. Each time is the fastest of
--rounds interleaved rounds (other work on the machine only ever adds time).
Run: `python benchmarks/bench_generate.py --help`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cyb_core import model as model_lib  # noqa: E402
from cyb_core import tokenizer as tok_lib  # noqa: E402
from cyb_core.engine import generate  # noqa: E402

WORDS = ["The", "It", "In", "She", "A", "When", "He", "There", "They", "But", "We", "This"]


def load_model(device):
    base = ROOT / "data" / "base"
    if (base / "config.json").exists() and any(base.glob("*.safetensors")):
        return model_lib.load(base, device=device), "data/base"
    return model_lib.new_base(tok_lib.load(ROOT / "data" / "tokenizer"), "small").to(
        device
    ), "fresh small"


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def emitted(g) -> int:
    """Real tokens a row produced (an end-of-text counts: it cost a step like any other)."""
    return len(g.token_ids) + (g.finish_reason == "eot")


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
        "--batch-size", type=int, default=8, help="prompts decoded together (default: %(default)s)"
    )
    p.add_argument(
        "--new-tokens",
        type=int,
        default=64,
        help="tokens generated per prompt (default: %(default)s)",
    )
    p.add_argument(
        "--w",
        type=int,
        default=4,
        help="steps per real token for the pause recipes (default: %(default)s)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="timed rounds after a warm-up, the fastest reported (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch, 0 keeps torch's default; 1 is steadier on a busy machine",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    m, source = load_model(device)
    prompts = [WORDS[i % len(WORDS)] for i in range(args.batch_size)]
    n = args.new_tokens
    print(
        f"device: {device}  threads: {torch.get_num_threads()}  model: {source} "
        f"({model_lib.n_params(m) / 1e6:.1f}M)  batch: {args.batch_size}  new_tokens: {n}  w: {args.w}"
    )

    # Recipe 2's forward steps (its slowest row's), to time plain decoding over a cache as long
    m.with_settings(w=args.w)
    r2_kw = dict(recipe="variable", readout="sample")
    r2_steps = max(
        emitted(g) + sum(g.pauses) for g in generate(m, prompts, max_new_tokens=n, **r2_kw)
    )
    runs = {  # name -> (w, generate keywords)
        "plain": (1, dict(recipe="constant")),
        "plain_long": (1, dict(recipe="constant", max_new_tokens=r2_steps)),
        "recipe1": (args.w, dict(recipe="constant")),
        "recipe2": (args.w, r2_kw),
        "recipe1_nocache": (
            args.w,
            dict(recipe="constant", use_cache=False, max_new_tokens=n // 2),
        ),
        "recipe1_half": (args.w, dict(recipe="constant", max_new_tokens=n // 2)),
        "recipe1_processors": (
            args.w,
            dict(
                recipe="constant",
                do_sample=True,
                temperature=0.9,
                top_k=50,
                top_p=0.95,
                min_p=0.02,
                repetition_penalty=1.2,
            ),
        ),
        "recipe1_stop": (args.w, dict(recipe="constant", stop=["\x07never", "zzqqzz"])),
    }
    times = {k: [] for k in runs}
    gens = {}
    for r in range(args.rounds + 1):  # round 0 warms up; then the runs interleaved
        for name, (w, kw) in runs.items():
            m.with_settings(w=w)
            dt, gens[name] = timed(
                lambda kw=kw: generate(m, prompts, **{"max_new_tokens": n, **kw}), device
            )
            if r:
                times[name].append(dt)
    t = {
        k: min(v) for k, v in times.items()
    }  # best of: other jobs on the machine only ever add time

    # batch steps: plain and Recipe 1 take one per token of their longest row
    steps = {k: max(emitted(g) for g in gens[k]) for k in ("plain", "plain_long", "recipe1")}
    plain_step = t["plain"] / steps["plain"]
    r1_token = t["recipe1"] / steps["recipe1"]
    print(f"plain_ms_per_token: {1e3 * plain_step:.2f}")
    print(f"recipe1_ms_per_token: {1e3 * r1_token:.2f}")
    print(f"recipe1_over_plain_time_per_token: {r1_token / plain_step:.3f}  (target <= 2.0 on CPU)")

    g2 = gens["recipe2"]
    real = sum(emitted(g) for g in g2) / len(g2)  # mean real tokens per row
    pauses = sum(sum(g.pauses) for g in g2) / sum(len(g.pauses) for g in g2)
    row_steps = [emitted(g) + sum(g.pauses) for g in g2]  # a row's forward steps
    r2_token = t["recipe2"] / real
    print(f"recipe2_mean_pauses: {pauses:.3f}")
    print(f"recipe2_ms_per_token: {1e3 * r2_token:.2f}")
    print(
        f"recipe2_over_plain_step_x_1_plus_pauses: {r2_token / ((1 + pauses) * plain_step):.3f}  (target <= 1.15)"
    )
    print(f"recipe2_ms_per_step_over_plain: {t['recipe2'] / max(row_steps) / plain_step:.3f}")
    # recipe2_over_plain_step_x_1_plus_pauses is the product of the three below
    long_step = t["plain_long"] / steps["plain_long"]
    print(
        f"recipe2_ms_per_step_over_plain_same_cache_length: "
        f"{t['recipe2'] / max(row_steps) / long_step:.3f}  ({steps['plain_long']} plain steps)"
    )
    print(
        f"recipe2_slowest_row_over_mean_steps: {max(row_steps) * len(row_steps) / sum(row_steps):.3f}"
    )
    print(f"plain_step_at_recipe2_cache_length_over_plain_step: {long_step / plain_step:.3f}")

    same = [g.token_ids for g in gens["recipe1_nocache"]] == [
        g.token_ids for g in gens["recipe1_half"]
    ]
    print(
        f"kv_cache_speedup_recipe1: {t['recipe1_nocache'] / t['recipe1_half']:.2f}  "
        f"({n // 2} tokens; same output: {same})"
    )
    for name in ("recipe1_processors", "recipe1_stop"):
        per_token = t[name] / max(emitted(g) for g in gens[name])
        print(f"{name}_over_greedy_time_per_token: {per_token / r1_token:.3f}")


if __name__ == "__main__":
    main()
