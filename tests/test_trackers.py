"""`cyb train --report-to`: what a tracker received, read back from its own files with no network.

TensorBoard's event files are read with TensorBoard's EventAccumulator, Trackio's local store
with Trackio's SQLiteStorage (in a fresh process, as Trackio reads TRACKIO_DIR at import); the
values must be log.jsonl's, step for step.
"""

import json
import os
import subprocess
import sys

import pytest
from test_families import save_family, write_corpus

from cyb.cli import main
from cyb_core import trackers

W = 3


def train_line(tmp_path, report_to: str) -> list[str]:
    return (
        f"train --init {tmp_path / 'init'} --data-root {tmp_path / 'corpus'} --out "
        f"{tmp_path / 'run'} --variant cyb-ap --w {W} --omega 1:1:1 --seq-len 8 --batch-size 2 "
        f"--tokens 48 --eval-every 2 --device cpu --no-progress --report-to {report_to}"
    ).split()


@pytest.fixture
def setup(tmp_path):
    save_family("gpt2", tmp_path / "init")
    write_corpus(tmp_path / "corpus")
    return tmp_path


def log_records(run):
    return [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]


def test_tensorboard_event_files_hold_the_log(setup, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(train_line(setup, "tensorboard")) == 0, capsys.readouterr().err
    records = log_records(setup / "run")
    assert len(records) == 3 and len(records[0]["halting"]) == W
    assert all(abs(sum(r["halting"]) - 1) < 1e-6 for r in records)  # a distribution per token
    ev = EventAccumulator(str(setup / "run" / "tensorboard"))
    ev.Reload()
    tags = set(ev.Tags()["scalars"])
    want = {"train/loss", "train/lr", "train/expected_pauses", "val/ppl"}
    assert want | {f"halting/s_{i}" for i in range(W)} <= tags

    def check(tag, rows):  # (step, value) pairs; event files hold float32
        got = [(e.step, e.value) for e in ev.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in rows], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in rows], rel=1e-6), tag

    check("train/loss", [(r["step"], r["loss"]) for r in records])
    check("train/lr", [(r["step"], r["lr"]) for r in records])
    check("halting/s_2", [(r["step"], r["halting"][2]) for r in records])
    vals = [(r["step"], r["val_ppl"]) for r in records if "val_ppl" in r]
    assert [s for s, _ in vals] == [2, 3]
    check("val/ppl", vals)


def test_trackio_local_store_holds_the_log(setup):
    pytest.importorskip("trackio")
    env = {
        **os.environ,
        "TRACKIO_DIR": str(setup / "trackio"),
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "*",
    }
    argv = [sys.executable, "-m", "cyb", *train_line(setup, "trackio")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    read = (
        "import json, trackio\n"
        "from trackio.sqlite_storage import SQLiteStorage as S\n"
        "print(json.dumps({'runs': S.get_runs('cyb'), 'logs': S.get_logs('cyb', 'run')}))\n"
    )
    got = subprocess.run(
        [sys.executable, "-c", read], env=env, capture_output=True, text=True, timeout=300
    )
    assert got.returncode == 0, got.stderr
    store = json.loads(got.stdout.strip().splitlines()[-1])
    assert store["runs"] == ["run"]
    records = log_records(setup / "run")
    logs = {row["step"]: row for row in store["logs"]}
    assert sorted(logs) == [r["step"] for r in records]
    for r in records:
        row = logs[r["step"]]
        assert row["train/loss"] == pytest.approx(r["loss"])
        assert row["train/expected_pauses"] == pytest.approx(r["mean_expected_pauses"])
        assert [row[f"halting/s_{i}"] for i in range(W)] == pytest.approx(r["halting"])
        if "val_ppl" in r:
            assert row["val/ppl"] == pytest.approx(r["val_ppl"])


def test_metrics_names_every_field_of_a_record():
    record = {
        "step": 4,
        "tokens_seen": 64,
        "loss": 2.5,
        "lr": 1e-3,
        "mean_expected_pauses": 0.7,
        "halting": [0.5, 0.3, 0.2],
        "elapsed_s": 1.0,
        "val_ppl": 9.0,
        "val_nll": 2.2,
        "val_expected_pauses": 0.6,
    }
    assert trackers.metrics(record) == {
        "train/tokens_seen": 64.0,
        "train/loss": 2.5,
        "train/lr": 1e-3,
        "train/expected_pauses": 0.7,
        "halting/s_0": 0.5,
        "halting/s_1": 0.3,
        "halting/s_2": 0.2,
        "val/ppl": 9.0,
        "val/nll": 2.2,
        "val/expected_pauses": 0.6,
    }


def test_a_missing_tracker_library_is_one_line_before_any_work(setup, capsys, monkeypatch):
    real = trackers.find_spec
    monkeypatch.setattr(trackers, "find_spec", lambda n: None if n == "wandb" else real(n))
    assert main(train_line(setup, "wandb")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "cyb train: error: wandb is not installed: pip install 'cyb[wandb]' for --report-to wandb"
    ]
    assert not (setup / "run").exists()


def _train_in_process_env(setup, report_to: str, env: dict) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "cyb", *train_line(setup, report_to)]
    return subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow  # wandb and mlflow are not in the dev extra; each starts slowly
def test_wandb_offline_run_holds_the_last_values(setup):
    pytest.importorskip("wandb")  # not in the dev extra: checked where it is installed
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    done = _train_in_process_env(setup, "wandb", env)
    assert done.returncode == 0, done.stderr
    # the offline run file (protobuf records, synced later by `wandb sync`) holds every tag
    (data,) = (setup / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    raw = data.read_bytes()
    for tag in ("train/loss", "train/lr", "train/expected_pauses", "halting/s_2", "val/ppl"):
        assert tag.encode() in raw, tag


@pytest.mark.slow
def test_mlflow_local_store_holds_the_log(setup):
    pytest.importorskip("mlflow")  # not in the dev extra: checked where it is installed
    done = _train_in_process_env(setup, "mlflow", {"MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 0, done.stderr
    uri = f"sqlite:///{(setup / 'run' / 'mlflow.db').resolve()}"  # the default: the run folder
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cyb").experiment_id])
    assert run.info.run_name == "run" and run.data.params["variant"] == "cyb-ap"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    records = log_records(setup / "run")
    assert [(m.step, m.value) for m in history] == [(r["step"], r["loss"]) for r in records]
