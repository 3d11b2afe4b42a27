"""docs/results.md builder: collect a tiny real experiment, render it, check the numbers carried over."""

from pathlib import Path

import pandas as pd
import pytest

from analysis import results, store
from cyb import experiment

ROOT = Path(__file__).resolve().parents[1]
DATASET = "fixture/heldout.d1.c1200"

CONFIG = """
out = "{out}"
db = "{db}"

[defaults]
init = "scratch:tiny"
tokenizer = "{root}/data/tokenizer"
data_root = "{root}/data/fixture"
seq_len = 16
batch_size = 4
tokens = 512
lr = 3e-3
eval_every = 4
ckpt_every = 8
val_blocks = 4
device = "cpu"

[eval]
split = "heldout"
modes = ["dense"]
max_docs = 1
max_chars = 1200

[grid]
seeds = [0]
regimes = ["1x1"]

[[runs]]
name = "baseline"
variant = "baseline"
seeds = [0, 1]

[[runs]]
name = "cyb-ap"
variant = "cyb-ap"
w = 3
hparams = {{ omega = "0:0:1" }}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("results")
    cfg_path = tmp / "exp.toml"
    db = tmp / "paper.duckdb"
    cfg_path.write_text(CONFIG.format(out=tmp / "runs" / "paper-variants", db=db, root=ROOT))
    list(experiment.run(experiment.load_config(cfg_path), progress=False))
    (tmp / "runs" / "paper.log").write_text(
        "START variants 2026-01-01T00:00:00Z\nEND variants 2026-01-01T00:30:00Z\n"
    )
    data = results.collect(tmp / "runs", db, tmp / "data", min_count=3)
    doc = results.render(data, tmp / "results.md", figures=False, dataset=DATASET)
    return tmp, db, data, doc.read_text()


def test_collect_writes_compact_tables_of_every_run(built):
    tmp, db, data, _ = built
    runs = pd.read_parquet(data / "runs.parquet")
    assert sorted(runs["run_id"]) == [
        "paper-variants.baseline-1x1-s0",
        "paper-variants.baseline-1x1-s1",
        "paper-variants.cyb-ap-1x1-s0",
    ]
    assert runs["complete"].all() and (runs["steps"] == 8).all()
    log = pd.read_parquet(data / "train_log.parquet")
    assert log.groupby("run_id")["step"].max().eq(8).all() and log["val_ppl"].notna().any()
    steps = pd.read_parquet(data / "steps.parquet")
    assert steps.groupby("eval_id")["mean_s"].sum().round(6).eq(1).all()  # over 0..W-1
    assert len(pd.read_parquet(data / "density.parquet"))
    assert len(pd.read_parquet(data / "table3.parquet"))
    assert not (tmp / "data.tmp").exists()


def test_render_carries_the_database_numbers(built):
    tmp, db, data, doc = built
    with store.reading(db) as con:
        ppl = dict(con.execute("SELECT run_id, ppl FROM evals").fetchall())
    base = [ppl["paper-variants.baseline-1x1-s0"], ppl["paper-variants.baseline-1x1-s1"]]
    mean, sd = pd.Series(base).mean(), pd.Series(base).std()
    assert f"| baseline | 2 | {mean:.1f} ± {sd:.1f} |" in doc
    assert f"| cyb-ap | 1 | {ppl['paper-variants.cyb-ap-1x1-s0']:.1f} |" in doc
    for run_id in ppl:
        assert f"`{run_id}`" in doc
    assert "0.50 h of wall time" in doc
    assert "## 9. What reproduced" in doc


def test_figures_build_for_every_section(built):
    tmp, db, data, _ = built
    figs = results.build_figures(results.Data(data, DATASET), None)
    expected = {"fig-variants.png", "fig-data.png", "fig-latency.png", "fig-calibration.png"}
    assert expected <= set(figs)


def test_crossing_interpolates_between_points():
    assert results.crossing([1, 2, 3], [10, 8, 6], 7) == pytest.approx(2.5)
    assert results.crossing([1, 2, 3], [10, 8, 6], 12) == 1
    assert results.crossing([1, 2, 3], [10, 8, 6], 5) is None


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    assert results.main(["render", "--data", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no results data") and "\n" not in err
