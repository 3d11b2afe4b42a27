"""What a GPU run depends on, checked on the CPU: host syncs, bf16 numerics, memory, devices.

CI has no GPU, so these are proxies. A host sync shows up on the CPU as a tensor-to-host
conversion (tests/host_conversions.py); the decoding loops are run with the GPU's poll
interval forced. bf16 autocast works on the CPU as on a GPU. Peak memory is read from the
kernel (VmHWM) around one training step.
"""

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from host_conversions import HostConversions
from support import ROOT, tiny_model, tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

from cyb_core import adaptive, decoding, distributed, engine, losses, pauses, vocab
from cyb_core import model as model_lib
from cyb_core.adaptive import adaptive_eval
from cyb_core.train import train

TOKENIZER = tokenizer()


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(w=3, seed=0, **config):
    """A tiny Llama (new_base's rows); `config` overrides (e.g. a large vocabulary, eager
    attention)."""
    if not config:
        return tiny_model(w, seed=seed, spread=None)
    cfg = LlamaConfig(
        vocab_size=len(TOKENIZER),
        **model_lib.PRESETS["tiny"],
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    for k, v in config.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    m = model_lib.CYBModel(AutoModelForCausalLM.from_config(cfg), TOKENIZER)
    return m.with_settings(w=w, variant="cyb-ap").eval()


@pytest.fixture
def gpu_polling(monkeypatch):
    """The decoding loops as they run on a GPU: `Out.poll` syncs once per 8 tokens' worth."""
    real = decoding.poll_every

    def as_on_a_gpu(device, steps_per_token=1):
        return real(torch.device("cuda"), steps_per_token)

    monkeypatch.setattr(engine, "poll_every", as_on_a_gpu)
    monkeypatch.setattr(adaptive, "poll_every", as_on_a_gpu)
    return decoding.GPU_POLL_EVERY


# ----------------------------------------------------------------------------- host syncs


def test_recipe2_generation_and_adaptive_eval_convert_far_fewer_tensors_than_tokens(gpu_polling):
    m = tiny()
    n = 64
    with HostConversions() as hc:
        gens = engine.generate(
            m, ["The"], recipe="variable", max_new_tokens=n, do_sample=True, readout="sample"
        )
    steps = len(gens[0].token_ids) + sum(gens[0].pauses)
    print(f"Recipe 2, {len(gens[0].token_ids)} tokens in {steps} steps: {hc.report()}")
    assert len(gens[0].token_ids) == n  # the bound below is about 64 tokens
    # one poll per 8 W steps, plus the final copies: not one per token (transformers' check of
    # the 2-D mask alone made one per step: 181 for this call)
    assert hc.total < n / 4, hc.report()
    assert hc.by_kind["__int__"] <= math.ceil(steps / (gpu_polling * m.settings.w)), hc.report()

    doc = "Alice didn't know what to say, so she said nothing at all. " * 8
    with HostConversions() as hc:
        res = adaptive_eval(m, [doc], seq_len=128, progress=False, dk_threshold=None)
    steps = len(res.nll) + int(res.pauses.sum())
    print(f"adaptive eval, {len(res.nll)} tokens in {steps} steps: {hc.report()}")
    assert len(res.nll) >= 64 and hc.total < len(res.nll) / 4, hc.report()


def test_host_conversions_do_not_grow_with_the_tokens_generated(gpu_polling):
    m = tiny()
    counts = {}
    for n in (16, 64):
        with HostConversions() as hc:
            g = engine.generate(m, ["The"], recipe="constant", max_new_tokens=n, do_sample=True)
        assert len(g[0].token_ids) == n
        counts[n] = hc.by_kind.copy()
    # only the polls grow (each reads how many rows are done), one per 8 tokens; everything
    # else is per call
    assert counts[64]["__int__"] - counts[16]["__int__"] == (64 - 16) // gpu_polling
    assert counts[64] - Counter(__int__=counts[64]["__int__"]) == counts[16] - Counter(
        __int__=counts[16]["__int__"]
    )


def _step_conversions(tmp_path, seq_len: int, recipe: str) -> HostConversions:
    """Conversions of 3 training steps minus those of 1: two steps of the loop itself."""
    from test_train import tiny_config

    got = []
    for steps in (1, 3):
        cfg = tiny_config(
            tmp_path / f"{recipe}-{seq_len}-{steps}",
            variant="cyb-ap",
            w=3,
            recipe=recipe,
            hparams={"omega": "1:1:2"} if recipe == "variable" else {},
            seq_len=seq_len,
            tokens=seq_len * 4 * steps,
            grad_accum=2,
            eval_every=100,
            ckpt_every=100,
            mask_pauses=True,
        )
        with HostConversions() as hc:
            train(cfg, progress=False)
        got.append(hc)
    per_step = {k: (got[1].by_kind[k] - got[0].by_kind[k]) / 2 for k in got[1].by_kind}
    return {k: v for k, v in per_step.items() if v}


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_a_training_step_converts_a_bounded_number_of_tensors(tmp_path, recipe):
    """Counted on the CPU, this includes conversions of tensors that stay on the CPU on a GPU
    run too: torch's AdamW reads its CPU step counters (fused AdamW on CUDA does not), the
    pause counts are checked where they are drawn, on the CPU. Per step (2 micro-batches):
    one tolist of the step's loss, one or two of transformers' mask checks per forward."""
    short = _step_conversions(tmp_path, 16, recipe)
    long = _step_conversions(tmp_path, 64, recipe)
    print(f"one training step ({recipe}, 2 micro-batches): {short}")
    assert short == long  # independent of the tokens per step
    on_device = {k: v for k, v in short.items() if k != "item"}  # item: AdamW's CPU counters
    # at most 16 per micro-batch, none per token (a per-token sync would be 64+ at seq_len 64)
    assert sum(on_device.values()) <= 32, short


# ----------------------------------------------------------------------------- bf16


def test_dk_prior_is_added_in_fp32_to_bf16_logits():
    """bf16 logits go into the loss as they are; the prior's log(psi V) is added in fp32 there.

    Reference: the same bf16 values upcast to fp32 first. Adding the prior in bf16 instead
    rounds log(psi V) ~ 8.9 and every biased logit to bf16's spacing there (2^-5 at 8..16):
    up to ~0.03 nat, which this test shows the old way of adding it did.
    """
    torch.manual_seed(0)
    V, dk = 8192, 3
    z = (torch.randn(2, 8, 3, V) * 2).to(torch.bfloat16)
    y = torch.randint(10, V, (2, 8))
    ref = losses.step_quantities(z.float(), y, dk, psi=0.9)
    got = losses.step_quantities(z, y, dk, psi=0.9)
    in_bf16 = losses.step_quantities(vocab.apply_dk_prior(z, dk, 0.9), y, dk)

    def err(a, b):
        finite = torch.isfinite(a.log_d)
        return max(
            (a.log_d - b.log_d)[finite].abs().max().item(), (a.log_t - b.log_t).abs().max().item()
        )

    assert err(ref, got) < 1e-5  # fp32 reduction-order noise only
    assert err(ref, in_bf16) > 1e-3  # what the fp32 prior avoids


def test_bf16_autocast_losses_agree_with_fp32():
    """The bound, for any logits: each loss is built from log d_i, log(1 - d_i) and log t_i
    of the W steps, each a difference of two logsumexps over one step's logits, so each moves
    by at most 2 * delta when every logit moves by at most delta; a loss combines at most
    W + 1 of them with weights summing to <= 1 (log s_i adds up to W - 1 log d_j and one mix;
    the read-outs and KL terms are convex combinations), so it moves by <= 2 (W + 1) delta.
    delta itself is bf16's rounding: unit roundoff 2^-9 relative, compounded over the few
    roundings of the inputs of the embedding, attention, MLP and head matmuls; we allow
    2^-6 of the largest logit (8 roundings' worth), observed ~2^-9."""
    m = tiny()
    W = m.settings.w
    torch.manual_seed(1)
    ids = torch.randint(10, m.n_tokens - 20, (4, 33))
    ex = pauses.expand_constant(ids[:, :-1], W, m.pause_ids)
    args = dict(position_ids=ex.position_ids, attention_mask=ex.attention_mask, prior=False)
    with torch.no_grad():
        z32, _ = m(ex.input_ids, **args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z16, _ = m(ex.input_ids, **args)
    assert z16.dtype == torch.bfloat16
    delta = (z16.float() - z32).abs().max().item()
    print(f"bf16 logits: largest error {delta:.3g} at largest |logit| {z32.abs().max():.3g}")
    assert delta <= 2**-6 * z32.abs().max().item()
    for variant, hp in [
        ("tbys", {}),
        ("control", {}),
        ("every-step", {}),
        ("cyb-ap", {"omega": "1:1:2", "gamma": 0.9}),
        ("cyb-va", {"rho": "1:1:1"}),
        ("cyb-dp", {"rho": "1:1:1", "alpha": 0.01}),
    ]:
        a = losses.compute(variant, ex.to_steps(z32), ids[:, 1:], m.dk_id, psi=0.9, **hp)
        b = losses.compute(variant, ex.to_steps(z16), ids[:, 1:], m.dk_id, psi=0.9, **hp)
        gap = (a.per_token - b.per_token).abs().max().item()
        print(f"{variant}: loss {a.loss:.4f}, largest per-token gap {gap:.3g}")
        assert gap <= 2 * (W + 1) * delta, variant
        assert abs(a.loss - b.loss).item() <= 2 * (W + 1) * delta, variant


# ----------------------------------------------------------------------------- memory

_PEAK_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, {tests!r})
from test_gpu_readiness import tiny
from cyb_core import losses
from cyb_core.forward import step_logits

torch.set_num_threads(1)
V, B, T, W = {V}, 2, 64, 4
m = tiny(W, vocab_size=V, max_position_embeddings=T + 1).train()
m.with_settings(mask_pauses=True)
x = torch.randint(10, 8000, (B, T + 1))
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)

def step():
    logits, steps = step_logits(m, x[:, :-1], W, prior=False)
    out = losses.compute("cyb-ap", logits, x[:, 1:], m.dk_id, steps=steps, psi=0.9)
    del logits  # as the trainer does
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

def hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) * 1024

def rss():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmRSS"))
    return int(line.split()[1]) * 1024

step()  # optimizer state, allocator warm-up
base = rss()
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
step()
print(json.dumps({{"extra": hwm() - base, "logits": B * T * W * V * 4}}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_training_step_at_a_large_vocabulary_holds_two_logits_tensors_at_most():
    """Peak memory of one step (beyond what is resident before it) at V = 65536, where the
    (B, T*W, V) logits (128 MiB in fp32) dwarf the tiny model: the head's output (with the
    pause logits masked in place and the DK prior left to the loss) is saved for backward and
    its gradient is written once, so the peak is two logits tensors plus a chunk; a
    full-size copy (a biased, masked or upcast one) would add a third."""
    script = _PEAK_SCRIPT.format(tests=str(ROOT / "tests"), V=65536)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    multiple = got["extra"] / got["logits"]
    print(f"training step peak: {got['extra'] / 2**20:.0f} MiB = {multiple:.2f} x logits")
    assert multiple < 2.5


# ----------------------------------------------------------------------------- devices, masks


def test_decoding_mask_matches_transformers_for_sdpa_and_eager():
    """The 4-D mask a cached call builds gives the logits transformers' own 2-D handling gives."""
    for impl in ("sdpa", "eager"):
        m = tiny(_attn_implementation=impl)
        with torch.no_grad():
            m.model.get_input_embeddings().weight.normal_(0, 0.2)
        ref = engine.generate(m, ["The cat", "It"], recipe="variable", max_new_tokens=12)
        m._decoding_mask = lambda mask, q_len: mask  # transformers builds it from the 2-D one
        plain = engine.generate(m, ["The cat", "It"], recipe="variable", max_new_tokens=12)
        assert [(g.token_ids, g.pauses) for g in ref] == [(g.token_ids, g.pauses) for g in plain]


def test_sliding_window_models_keep_the_2d_mask_and_warn_when_pauses_overflow_it(capsys):
    cfg = MistralConfig(
        vocab_size=len(TOKENIZER),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        sliding_window=32,
    )
    m = model_lib.CYBModel(AutoModelForCausalLM.from_config(cfg), TOKENIZER).with_settings(w=4)
    mask = torch.ones(1, 5, dtype=torch.long)
    assert m._decoding_mask(mask, 1) is mask  # one 4-D mask cannot carry a per-layer window
    m.check_window(8)  # 8 tokens x 4 slots = 32: fits
    assert "sliding window" not in capsys.readouterr().err
    m.check_window(9)
    err = capsys.readouterr().err
    assert "sliding window of 32" in err and "last 8 tokens" in err


def test_local_rank_wins_over_an_explicit_cuda_device_under_a_launcher(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 1)
    assert distributed.resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)


def test_cuda_with_a_cpu_only_torch_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(ValueError, match="CPU-only build: install a CUDA build") as e:
        distributed.resolve_device("cuda")
    assert "\n" not in str(e.value)


def test_auto_on_a_gpu_machine_with_a_cpu_only_torch_warns_once(monkeypatch, tmp_path, capsys):
    driver = tmp_path / "nvidia-version"
    driver.write_text("NVRM version: test\n")
    monkeypatch.setattr(distributed, "_NVIDIA_DRIVER", str(driver))
    monkeypatch.setattr(distributed, "_warned_cpu_only", [])
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.resolve_device("auto") == torch.device("cpu")
    assert distributed.resolve_device("auto") == torch.device("cpu")
    err = capsys.readouterr().err
    assert err.count("CPU-only build") == 1 and "make install-gpu" in err


def test_chunk_rows_are_sized_per_device_and_counts_are_checked_on_the_cpu():
    V = 262144  # Gemma's vocabulary
    assert vocab.lse_chunk_rows(V, torch.device("cpu")) == 16
    assert vocab.lse_chunk_rows(V, torch.device("cuda")) == 256
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="pause counts must be in 0..2"):
        pauses.expand_with_counts(ids, 3, [901, 902], torch.tensor([[0, 3, 1]]))
    with pytest.raises(ValueError, match="counts must have the shape"):
        pauses.expand_with_counts(ids, 3, [901, 902], torch.tensor([[0, 1]]))
    ex = pauses.expand_with_counts(ids, 3, [901, 902], torch.tensor([[0, 2, 1]]))
    assert ex.input_ids.tolist() == [[5, 6, 901, 902, 7, 901]]
