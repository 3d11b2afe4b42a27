"""The compact results data (docs/results/data/*.parquet): what it holds and how to read it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cyb_core.errors import UserError

from .paper import PAPER_HPARAMS, PAPER_PPL

DATA_DIR = Path("docs/results/data")
DOC = Path("docs/results.md")
DATASET = "heldout.c6000"
BASE_RUN = "base"  # the shipped base model, evaluated as is (`cyb eval data/base --run-id base`)
MAIN = "paper-variants.cyb-ap-1x1-s0"  # the run behind the token-level sections
VARIANTS = ("baseline", "tbys-1", "tbys-2", "tbys-3", "cyb-ap", "cyb-va", "cyb-dp")
CURVE = ("baseline", "tbys-3", "cyb-ap")  # the variants trained on more data
REGIMES = ("1x1", "2x1", "1x2", "1x3")


class ResultsError(UserError, RuntimeError):
    pass


class Data:
    """Every Parquet table as an attribute (`d.runs`, `d.steps`, ...), plus `main`: each run
    with its dense evaluation on `dataset`."""

    def __init__(self, path: Path, dataset: str = DATASET):
        if not (path / "runs.parquet").exists():
            raise ResultsError(f"no results data in {path}: run `cyb results collect` first")
        for f in path.glob("*.parquet"):
            setattr(self, f.stem, pd.read_parquet(f))
        self.dataset = dataset
        ev = self.evals
        ev = ev[(ev["dataset"] == dataset) & (ev["mode"] == "dense")]
        cols = ["run_id", "eval_id", "ppl", "n_tokens", "mean_expected_pauses", "accuracy"]
        self.main = self.runs.merge(ev[cols], on="run_id", how="left")
        base = ev[ev["run_id"] == BASE_RUN]
        self.base_ppl = float(base["ppl"].iloc[0]) if len(base) else float("nan")

    def pick(
        self, experiment: str, name: str, regime: str = "1x1", seed: int | None = None
    ) -> pd.DataFrame:
        m = self.main
        sel = m[(m["experiment"] == experiment) & (m["name"] == name) & (m["regime"] == regime)]
        return sel if seed is None else sel[sel["seed"] == seed]

    def one(self, experiment, name, regime="1x1", seed=0) -> dict | None:
        sel = self.pick(experiment, name, regime, seed)
        return sel.iloc[0].to_dict() if len(sel) else None


def lr_sweep(d: Data) -> pd.DataFrame:
    """The paper-lr runs, each with its `family`: the run name without its -lr<rate> suffix."""
    lr = d.main[d.main["experiment"] == "paper-lr"].copy()
    lr["family"] = lr["name"].str.replace(r"-lr.*$", "", regex=True)
    return lr


def hparam_rows(d: Data) -> list[dict]:
    """The loss-hyperparameter comparison (paper Fig. 5): each variant's default, then every
    paper-hparams run, seed 0."""

    def hp(r):
        return ", ".join(f"{k} {v}" for k, v in json.loads(r["hparams"]).items())

    defaults = [(v, "paper-variants", v) for v in ("cyb-ap", "cyb-va", "cyb-dp")]
    hps = d.main[d.main["experiment"] == "paper-hparams"].sort_values("name")
    picks = defaults + [(r["variant"], "paper-hparams", r["name"]) for _, r in hps.iterrows()]
    rows = []
    for variant, exp, name in picks:
        r = d.one(exp, name)
        if r is None:
            continue
        paper = f"{PAPER_PPL[name]:.2f}" if name in PAPER_PPL else None
        rows.append(
            {
                "variant": variant,
                "label": f"{variant}: {hp(r)}",
                "ppl": r["ppl"],
                "run": r["run_id"],
                "pauses": r["mean_expected_pauses"],
                "paper": PAPER_HPARAMS.get(name, paper),
            }
        )
    return rows
