"""Experiment trackers for `cyb train --report-to`: TensorBoard, Trackio, W&B, MLflow.

Each writes through the library the tracker ships, an optional extra of its own. The training
loop hands every log.jsonl record to `Tracker.log`; the tracker is opened at the first record
(after every check of the run, so a refused run leaves no tracker files) and closed by `close`.
What each step logs (tags as in TensorBoard):

    train/loss, train/lr, train/expected_pauses, train/tokens_seen   every step
    halting/s_0 .. halting/s_{W-1}   the halting distribution: mean P(answer at step i)
    val/ppl, val/nll, val/expected_pauses   at each validation (--eval-every, the last step)

All of them work with no network: TensorBoard writes event files to RUN/tensorboard, Trackio its
local store (TRACKIO_DIR, default ~/.cache/huggingface/trackio), MLflow its tracking URI
(MLFLOW_TRACKING_URI, default the SQLite file RUN/mlflow.db), W&B syncs unless WANDB_MODE=offline.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from .names import TRACKERS as CHOICES

# --report-to choice -> the module it needs (the extra of the same name installs it)
MODULES = {kind: kind for kind in CHOICES if kind != "none"}
PROJECT = "cyb"


def check(kind: str) -> None:
    """ValueError for an unknown tracker or one whose library is missing (before any work)."""
    if kind not in CHOICES:
        raise ValueError(f"--report-to must be one of {', '.join(CHOICES)}, got {kind!r}")
    if kind != "none" and find_spec(MODULES[kind]) is None:
        raise ValueError(
            f"{MODULES[kind]} is not installed: pip install 'cyb[{kind}]' for --report-to {kind}"
        )


def metrics(record: dict) -> dict[str, float]:
    """A log.jsonl record as tracker scalars (the module docstring's tags)."""
    out = {}
    for key, value in record.items():
        if key == "step" or key == "elapsed_s":
            continue
        if key == "halting":
            out |= {f"halting/s_{i}": float(v) for i, v in enumerate(value)}
        elif key.startswith("val_"):
            out[f"val/{key[4:]}"] = float(value)
        else:
            name = "expected_pauses" if key == "mean_expected_pauses" else key
            out[f"train/{name}"] = float(value)
    return out


class Tracker:
    """One run's tracker; `log(record)` opens it on first use, `close()` finishes it."""

    def __init__(self, kind: str, out: Path, config: dict):
        check(kind)
        self.kind, self.out, self.config = kind, Path(out), config
        self.name = self.out.resolve().name
        self._backend = None

    def log(self, record: dict) -> None:
        if self.kind == "none":
            return
        step = int(record["step"])
        if self._backend is None:
            self._backend = getattr(self, f"_open_{self.kind}")(step)
        self._backend.log(metrics(record), step)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # one small adapter per library: log(dict, step) and close()

    def _open_tensorboard(self, first_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops the events past its checkpoint, as log.jsonl does
        writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=first_step)
        return _Adapter(
            lambda m, step: [writer.add_scalar(k, v, step) for k, v in m.items()],
            writer.close,
        )

    def _open_trackio(self, first_step: int):
        import trackio

        run = trackio.init(
            project=PROJECT, name=self.name, config=self.config, resume="allow", embed=False
        )
        return _Adapter(lambda m, step: run.log(m, step=step), trackio.finish)

    def _open_wandb(self, first_step: int):
        import wandb

        run = wandb.init(
            project=PROJECT,
            name=self.name,
            id=self.name,
            resume="allow",
            dir=str(self.out),
            config=self.config,
        )
        return _Adapter(lambda m, step: run.log(m, step=step), run.finish)

    def _open_mlflow(self, first_step: int):
        import os

        import mlflow

        # MLFLOW_TRACKING_URI if set, else a SQLite store in the run folder (no server)
        uri = (
            os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{(self.out / 'mlflow.db').resolve()}"
        )
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(PROJECT)
        found = mlflow.search_runs(
            filter_string=f"tags.mlflow.runName = '{self.name}'", output_format="list"
        )
        mlflow.start_run(run_id=found[0].info.run_id if found else None, run_name=self.name)
        if not found:
            mlflow.log_params({k: str(v)[:500] for k, v in self.config.items()})
        return _Adapter(lambda m, step: mlflow.log_metrics(m, step=step), mlflow.end_run)


class _Adapter:
    def __init__(self, log, close):
        self.log, self.close = log, close
