"""Data-parallel training: N processes (gloo on the CPU) reproduce one process at the same global batch.

The multi-process tests launch `torchrun` (and `accelerate launch`) on the real `cyb train`
command, as a user would; each takes 20-60 s on two cores, so they are marked slow. The fast
tests cover the single-process path of the same code and the arithmetic the equivalence rests on.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import ROOT

from cyb_core import distributed
from cyb_core import model as model_lib
from cyb_core import tokenizer as tok_lib
from cyb_core.forward import evaluate_nll
from cyb_core.train import train
from cyb_core.train_config import TrainConfig, lr_at, sample_pause_counts

BIN = Path(sys.executable).parent
FIXTURE = str(ROOT / "data" / "fixture")

# One setting for the in-process run and the launched command (flag names = field names).
SETTINGS = dict(
    init="scratch:tiny",
    data_root=FIXTURE,
    split="finetune",
    variant="cyb-ap",
    w=3,
    recipe="variable",  # Recipe 2: pause counts sampled per step, the part easiest to get wrong
    seq_len=16,
    batch_size=8,
    tokens=16 * 8 * 6,
    lr=3e-3,
    eval_every=3,
    ckpt_every=2,
    device="cpu",
)


def config(out, **kw) -> TrainConfig:
    merged = {**SETTINGS, "tokenizer": str(ROOT / "data" / "tokenizer"), **kw}
    hparams = {"omega": merged.pop("omega", "1:1:2")}
    return TrainConfig(out=str(out), hparams=hparams, **merged)


def cli_args(out, **kw) -> list[str]:
    merged = {**SETTINGS, "omega": "1:1:2", **kw}
    args = ["train", "--out", str(out)]
    for k, v in merged.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    """For runs doing the same fp32 additions in the same order (so equal on any machine)."""
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


# Runs that add the same fp32 numbers in another order (rows split over ranks and micro-batches,
# then all-reduced) differ by rounding, which AdamW passes on as follows; nothing here depends
# on the CPU (x86 or ARM, any SIMD width or thread count only reorders the same additions):
# - per element: AdamW's step is lr * m_hat / (sqrt(v_hat) + eps) with |m_hat / sqrt(v_hat)|
#   <= U = (1 - b1) / sqrt(1 - b2) / (1 - b1 / sqrt(b2)) (~5.8 at betas (0.9, 0.95)) whatever
#   the gradients, so two runs differ by at most 2 U sum_t lr_t per weight. An element whose
#   gradient is itself rounding noise (its terms cancel) can use much of that, so no tighter
#   elementwise bound holds everywhere: 1.006e-5 on one machine, 2.3e-6 on another.
# - per tensor: elements with a real gradient carry its norm. Their gradients, sums of n <~ 10^3
#   terms, differ by a relative gamma_n = n 2^-24 <~ 6e-5 (recursive summation, Higham), which
#   AdamW's normalised step passes on as the same relative change of each step; so
#   |a - b| / |a - init| stays near gamma_n. RELATIVE_TOL leaves 16 gamma_n of room for the
#   cancelling elements, while a real fault (a wrong shard, a missing average, a skipped step)
#   changes every weight by a whole step: a ratio of 1e-1 or more.
ADAM_BETAS = (0.9, 0.95)  # cyb_core.train's AdamW
RELATIVE_TOL = 1e-3


def adam_step_bound(b1: float = ADAM_BETAS[0], b2: float = ADAM_BETAS[1]) -> float:
    return (1 - b1) / math.sqrt(1 - b2) / (1 - b1 / math.sqrt(b2))


def assert_same_up_to_summation_order(a: Path, b: Path, cfg: TrainConfig) -> None:
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    init = model_lib.new_base(tok_lib.load(cfg.tokenizer), "tiny", seed=cfg.seed).model
    w0 = init.state_dict()
    hard = 2 * adam_step_bound() * sum(lr_at(t, cfg) for t in range(cfg.steps))
    worst = max(float((wa[k] - wb[k]).norm() / (wa[k] - w0[k]).norm()) for k in wa)
    print(f"largest |a - b| / |a - init| over the tensors: {worst:.3g} (bound {RELATIVE_TOL})")
    for k in wa:
        diff = (wa[k] - wb[k]).abs()
        assert diff.max() <= hard, f"{k}: {diff.max():.3g} exceeds AdamW's bound {hard:.3g}"
        moved = (wa[k] - w0[k]).norm()
        ratio = float((wa[k] - wb[k]).norm() / moved)
        assert ratio <= RELATIVE_TOL, f"{k}: |a - b| / |a - init| = {ratio:.3g}"


def log_steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]


def launch(nproc: int, args: list[str], **popen) -> subprocess.Popen:
    """`torchrun --nproc_per_node N cyb ARGS` with its rendezvous on the loopback interface
    only, as docs/scaling.md documents it."""
    import socket

    with socket.socket() as s:  # a free loopback port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(BIN / "torchrun"), "--nnodes", "1", f"--nproc_per_node={nproc}"]
    cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks share two cores
    return subprocess.Popen([*cmd, str(BIN / "cyb"), *args], cwd=ROOT, env=env, text=True, **popen)


def run_launched(nproc: int, args: list[str], timeout: float = 300) -> str:
    p = launch(nproc, args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    return out


# ----------------------------------------------------------------------------- fast


def test_shard_range_covers_every_item_once_in_order():
    for n in range(0, 12):
        for world in range(1, 5):
            parts = [distributed.shard_range(n, r, world) for r in range(world)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_per_rank_micro_batch_and_its_error():
    assert distributed.per_rank(32, 4, 2) == 4
    assert distributed.per_rank(8, 1, 1) == 8
    with pytest.raises(ValueError, match="not divisible by 2 processes x 3 micro-batches"):
        distributed.per_rank(8, 2, 3)


def test_setup_without_a_launcher_is_one_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    d = distributed.setup("cpu")
    assert (d.rank, d.world, d.main, d.active) == (0, 1, True, False)
    assert not torch.distributed.is_initialized()
    x = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(x).tolist() == [1.0, 2.0]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}


def test_pause_counts_are_drawn_for_the_global_batch(tmp_path):
    cfg = config(tmp_path)
    a, b = sample_pause_counts(cfg, (8, 16), 3), sample_pause_counts(cfg, (8, 16), 3)
    assert torch.equal(a, b) and a.shape == (8, 16) and 0 <= a.min() and a.max() <= 2
    assert not torch.equal(a, sample_pause_counts(cfg, (8, 16), 4))  # a new draw each step
    assert sample_pause_counts(config(tmp_path, recipe="constant"), (8, 16), 3) is None


def test_sharded_validation_without_a_group_equals_the_plain_one(tmp_path):
    from cyb_core import model as model_lib
    from cyb_core import tokenizer as tok_lib

    cfg = config(tmp_path)
    m = model_lib.new_base(tok_lib.load(cfg.tokenizer), "tiny").with_settings(w=3)
    blocks = torch.randint(10, 500, (5, 17))
    assert evaluate_nll(m, blocks, cfg, batch_size=2, sharded=True) == pytest.approx(
        evaluate_nll(m, blocks, cfg, batch_size=3)
    )


def test_single_process_parallel_path_and_grad_accum_match_the_plain_run(tmp_path):
    """parallel=True without a launcher is the plain run; grad_accum splits the same global batch
    (and its Recipe 2 pause draw) into micro-batches, which is what each DDP rank does."""
    kw = dict(tokens=16 * 8 * 2, val_blocks=2)  # two steps: a few seconds
    plain = train(config(tmp_path / "plain", **kw), progress=False)
    par = train(config(tmp_path / "par", **kw), progress=False, parallel=True, grad_ckpt=True)
    assert par["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)
    assert_same_weights(tmp_path / "plain", tmp_path / "par", atol=1e-6)
    accum = train(config(tmp_path / "accum", grad_accum=4, **kw), progress=False)
    assert accum["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-4)
    assert_same_up_to_summation_order(tmp_path / "plain", tmp_path / "accum", config("x", **kw))


# ----------------------------------------------------------------------------- slow: 2 processes


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    return out, train(config(out), progress=False)


def summary(run: Path) -> dict:
    return json.loads((run / "final" / "summary.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(one_process, tmp_path):
    """Each rank: 8 / 2 = 4 rows per step in 2 micro-batches of 2 (DDP no_sync on the first)."""
    ref, ref_summary = one_process
    out = tmp_path / "two"
    log = run_launched(2, cli_args(out, grad_accum=2))
    assert log.count("validation perplexity") == 1  # rank 0 alone reports
    got = summary(out)
    assert got["final_loss"] == pytest.approx(ref_summary["final_loss"], rel=1e-4)
    assert got["val"]["nll"] == pytest.approx(ref_summary["val"]["nll"], rel=1e-4)
    assert_same_up_to_summation_order(ref, out, config(ref))
    assert log_steps(out) == list(range(1, 7))
    assert not (out / "ckpt").exists()


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process(one_process, tmp_path):
    ref, ref_summary = one_process
    out = tmp_path / "fsdp"
    run_launched(2, [*cli_args(out), "--fsdp", "--grad-ckpt"])
    assert summary(out)["final_loss"] == pytest.approx(ref_summary["final_loss"], rel=1e-4)
    assert_same_up_to_summation_order(ref, out, config(ref))


@pytest.mark.slow
def test_killing_both_ranks_mid_run_then_resuming(tmp_path):
    steps = 24
    ref = tmp_path / "ref"
    train(config(ref, tokens=16 * 8 * steps), progress=False)
    out = tmp_path / "killed"
    args = cli_args(out, tokens=16 * 8 * steps)
    p = launch(
        2, args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    log, deadline = out / "log.jsonl", time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 7 and (out / "ckpt").exists():
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # torchrun and both ranks, at once
    p.wait()
    assert not (out / "final").exists(), "the run ended before it could be killed"
    assert (out / "ckpt").exists() or (out / "ckpt.old").exists()
    run_launched(2, args)
    assert_same_up_to_summation_order(ref, out, config(ref, tokens=16 * 8 * steps))
    assert log_steps(out) == list(range(1, steps + 1))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "final", "log.jsonl"]


@pytest.mark.slow
def test_accelerate_launch_single_process_path(one_process, tmp_path):
    """`accelerate launch` with one process runs the command as is; it must match the plain run."""
    if shutil.which("accelerate", path=str(BIN)) is None:
        pytest.skip("accelerate is not installed (pip install -e '.[accelerate]')")
    ref, ref_summary = one_process
    out = tmp_path / "acc"
    cmd = [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    r = subprocess.run(
        [*cmd, str(BIN / "cyb"), *cli_args(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert summary(out)["final_loss"] == pytest.approx(ref_summary["final_loss"], rel=1e-5)
    assert_same_weights(ref, out, atol=1e-6)


@pytest.mark.slow
def test_dense_eval_under_torchrun_shards_documents_and_writes_one_evaluation(
    one_process, tmp_path
):
    """Two ranks split the documents; rank 0 writes one evaluation equal to one process's."""
    run, _ = one_process
    args = ["eval", str(run), "--split", "heldout", "--data-root", FIXTURE, "--mode", "dense"]
    args += ["--max-docs", "3", "--max-chars", "1500", "--seq-len", "32", "--device", "cpu"]
    args += ["--json", "--no-progress"]
    one = subprocess.run(
        [str(BIN / "cyb"), *args, "--db", str(tmp_path / "one.duckdb")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    s1 = json.loads(one.stdout.strip().splitlines()[-1])
    out = run_launched(2, [*args, "--db", str(tmp_path / "two.duckdb")])
    lines, dec, i = [], json.JSONDecoder(), out.find('{"')
    while i >= 0:  # stderr shares the stream: find the JSON objects wherever they start
        obj, end = dec.raw_decode(out, i)
        lines.append(obj)
        i = out.find('{"', end)
    assert len(lines) == 1  # rank 0 alone prints the summary
    s2 = lines[0]
    assert s2["eval_id"] == s1["eval_id"] and s2["n_tokens"] == s1["n_tokens"]
    for k in ("ppl", "mean_expected_pauses", "accuracy"):
        assert s2[k] == pytest.approx(s1[k], rel=1e-5), k

    from analysis import store

    assert store.eval_summary(tmp_path / "two.duckdb", s1["eval_id"]) == pytest.approx(
        store.eval_summary(tmp_path / "one.duckdb", s1["eval_id"]), rel=1e-5
    )


def _hung_rank(rank: int, port: int, ready, results) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    try:
        # Both ranks have imported torch before either starts the clock: on a loaded machine
        # one spawn can lag the other by more than the timeout, which would fail the rendezvous
        # (also bounded by it) rather than the collective this test is about.
        ready.wait(timeout=120)
        distributed.setup("cpu", timeout=_HUNG_TIMEOUT)
        if rank == 1:
            time.sleep(6 * _HUNG_TIMEOUT)  # hangs: never joins the collective below
            os._exit(0)
        t0 = time.monotonic()
        try:
            distributed.all_reduce_sum(torch.ones(1))
            results.put(("no error", 0.0))
        except RuntimeError as e:
            results.put((distributed.is_timeout(e), time.monotonic() - t0))
    except BaseException as e:  # report, so the parent fails with the cause, not a queue timeout
        results.put((f"rank {rank}: {type(e).__name__}: {e}", 0.0))
    # os._exit skips the queue's feeder thread: flush it first or the result may never arrive
    results.close()
    results.join_thread()
    os._exit(0)


_HUNG_TIMEOUT = 5


@pytest.mark.slow
def test_a_hung_rank_ends_the_collective_after_the_timeout():
    """torch's default would wait 30 minutes; setup's timeout makes the waiting rank fail."""
    import multiprocessing
    import socket

    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_hung_rank, args=(r, port, ready, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        timed_out, waited = results.get(timeout=240)
    finally:
        for p in procs:
            p.kill()
            p.join()
    assert timed_out is True, timed_out
    assert _HUNG_TIMEOUT - 1 < waited < 5 * _HUNG_TIMEOUT
