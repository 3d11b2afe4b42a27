"""On a CUDA GPU: training, evaluation and resuming agree with the CPU; NCCL with two GPUs.

Every test here is marked `gpu` and skipped without CUDA (tests/conftest.py); the NCCL tests
also need two GPUs. `make gpu-check` (benchmarks/gpu_check.py) runs them with the timings.
fp32 comparisons with the CPU use 1e-4 (kernels differ in summation order, ~1e-6 seen on
the CPU side); bf16 ones use the bound argued in tests/test_gpu_readiness.py.
"""

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from support import DOCS, ROOT, tiny_model
from test_distributed import BIN, assert_same_up_to_summation_order
from test_distributed import config as dist_config
from test_train import tiny_config

from cyb_core import losses, pauses
from cyb_core import model as model_lib
from cyb_core.adaptive import adaptive_eval
from cyb_core.dense import dense_eval
from cyb_core.train import train

pytestmark = pytest.mark.gpu


def two_gpus():
    return pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs"
    )


def final_loss(run: Path) -> float:
    return json.loads((run / "final" / "summary.json").read_text())["final_loss"]


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_cuda_training_matches_the_cpu_in_fp32_and_runs_in_bf16(tmp_path, recipe):
    kw = dict(
        variant="cyb-ap",
        w=3,
        recipe=recipe,
        hparams={"omega": "1:1:2"} if recipe == "variable" else {},
        tokens=16 * 4 * 3,
    )
    cpu = train(tiny_config(tmp_path / "cpu", **kw), progress=False)
    gpu = train(tiny_config(tmp_path / "gpu", device="cuda", bf16=False, **kw), progress=False)
    assert gpu["final_loss"] == pytest.approx(cpu["final_loss"], rel=1e-4)
    assert_same_up_to_summation_order(tmp_path / "cpu", tmp_path / "gpu", tiny_config("x", **kw))
    bf = train(tiny_config(tmp_path / "bf16", device="cuda", **kw), progress=False)
    assert math.isfinite(bf["final_loss"]) and math.isfinite(bf["val"]["ppl"])
    assert bf["final_loss"] == pytest.approx(cpu["final_loss"], rel=2e-2)


def test_bf16_losses_agree_with_fp32_on_cuda():
    """The bound of test_gpu_readiness.test_bf16_autocast_losses_agree_with_fp32, on CUDA."""
    m = tiny_model(3, spread=None).to("cuda")
    W = m.settings.w
    ids = torch.randint(10, m.n_tokens - 20, (4, 33), device="cuda")
    ex = pauses.expand_constant(ids[:, :-1], W, m.pause_ids)
    args = dict(position_ids=ex.position_ids, attention_mask=ex.attention_mask, prior=False)
    with torch.no_grad():
        z32, _ = m(ex.input_ids, **args)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            z16, _ = m(ex.input_ids, **args)
    delta = (z16.float() - z32).abs().max().item()
    assert z16.dtype == torch.bfloat16 and delta <= 2**-6 * z32.abs().max().item()
    for variant in ("tbys", "cyb-ap", "cyb-va", "cyb-dp"):
        a = losses.compute(variant, ex.to_steps(z32), ids[:, 1:], m.dk_id, psi=0.9)
        b = losses.compute(variant, ex.to_steps(z16), ids[:, 1:], m.dk_id, psi=0.9)
        assert (a.per_token - b.per_token).abs().max().item() <= 2 * (W + 1) * delta


def test_mask_pauses_training_on_cuda(tmp_path):
    cfg = tiny_config(tmp_path / "run", device="cuda", variant="tbys", w=3, mask_pauses=True)
    assert math.isfinite(train(cfg, progress=False)["final_loss"])
    m = model_lib.load(tmp_path / "run" / "final", device="cuda")
    x = torch.tensor([[5, 6, 7]], device="cuda")
    with torch.no_grad():
        logits, _ = m(x)
    assert torch.isinf(logits[..., m.pause_ids]).all() and logits.dtype == torch.float32


def test_dense_and_adaptive_eval_on_cuda_match_the_cpu():
    m = tiny_model(3, spread=None)
    with torch.no_grad():
        m.model.get_input_embeddings().weight.normal_(0, 0.2)
    cpu = dense_eval(m, DOCS, seq_len=16, progress=False)
    cpu_ad = adaptive_eval(m, DOCS, seq_len=16, progress=False)
    m.to("cuda")
    gpu = dense_eval(m, DOCS, seq_len=16, progress=False)
    np.testing.assert_allclose(gpu.nll, cpu.nll, atol=1e-4, rtol=0)
    np.testing.assert_allclose(gpu.d, cpu.d, atol=1e-4, rtol=0)
    bf = dense_eval(m, DOCS, seq_len=16, progress=False, bf16=True)
    assert np.isfinite(bf.nll).all() and abs(bf.nll.mean() - cpu.nll.mean()) < 0.1
    gpu_ad = adaptive_eval(m, DOCS, seq_len=16, progress=False)
    np.testing.assert_array_equal(gpu_ad.pauses, cpu_ad.pauses)
    np.testing.assert_allclose(gpu_ad.nll, cpu_ad.nll, atol=1e-4, rtol=0)


def cuda_syncs(fn):
    """(fn's result, the host syncs CUDA's sync debug mode reports while it runs)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return out, sum("synchroniz" in str(w.message) for w in caught)


def test_adaptive_eval_on_cuda_syncs_far_less_than_once_per_token():
    """Syncs per extra token (a longer text minus a shorter one: setup copies cancel)."""
    m = tiny_model(3, spread=None).to("cuda")
    got = {}
    for n in (4, 16):
        doc = "Alice didn't know what to say, so she said nothing at all. " * n
        res, syncs = cuda_syncs(
            lambda doc=doc: adaptive_eval(m, [doc], seq_len=512, progress=False, dk_threshold=None)
        )
        got[n] = (len(res.nll), syncs)
    (t0, s0), (t1, s1) = got[4], got[16]
    assert (s1 - s0) < (t1 - t0) / 4, got


def test_a_cpu_checkpoint_resumes_on_the_gpu(tmp_path):
    kw = dict(variant="cyb-ap", w=3, recipe="variable", hparams={"omega": "1:1:2"})
    out = tmp_path / "run"
    assert train(tiny_config(out, **kw), progress=False, stop_after=2) == {"stopped_at": 2}
    done = train(tiny_config(out, **{**kw, "device": "cuda", "bf16": False}), progress=False)
    full = train(tiny_config(tmp_path / "full", **kw), progress=False)
    assert done["final_loss"] == pytest.approx(full["final_loss"], rel=1e-4)
    assert_same_up_to_summation_order(tmp_path / "full", out, tiny_config("x", **kw))


_LAUNCHED = """
import sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from test_distributed import config
from cyb_core.train import train
train(config(Path({out!r}), device="cuda", bf16=False), progress=False, parallel=True,
      fsdp={fsdp})
"""


@two_gpus()
@pytest.mark.parametrize("fsdp", [False, True])
def test_ddp_and_fsdp_over_nccl_match_one_gpu(tmp_path, fsdp):
    ref = tmp_path / "one"
    train(dist_config(ref, device="cuda", bf16=False), progress=False)
    out = tmp_path / "two"
    script = tmp_path / "launched.py"
    script.write_text(
        _LAUNCHED.format(root=str(ROOT), tests=str(ROOT / "tests"), out=str(out), fsdp=fsdp)
    )
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(script)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert final_loss(out) == pytest.approx(final_loss(ref), rel=1e-4)
    assert_same_up_to_summation_order(ref, out, dist_config(ref))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
