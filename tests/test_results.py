"""docs/results.md builder: collect a tiny real experiment, render it, check the numbers carried over."""

import re
import shutil

import pandas as pd
import pytest
from support import ROOT

from analysis import classes, results, store
from analysis.results import seeds
from cyb import experiment
from cyb.cli import main as cyb_main

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
    assert cyb_main(["results", "render", "--data", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cyb results: error: no results data") and "\n" not in err


# ----------------------------------------------------------------------------- section 10

WAITING = """
out = "{out}"
db = "{db}"

[defaults]
init = "scratch:tiny"
tokenizer = "{root}/data/tokenizer"
data_root = "{root}/data/mixed"
seq_len = 16
batch_size = 4
tokens = 256
lr = 3e-3
w = 2
mask_pauses = true
eval_every = 2
ckpt_every = 100
val_blocks = 2
device = "cpu"

[eval]
root = "{root}/data/mixed"
split = "heldout"
modes = ["dense"]
max_docs = 3
max_chars = 200

[grid]
seeds = [0, 1, 2]
regimes = ["1x1"]

[[runs]]
name = "baseline"
variant = "baseline"

[[runs]]
name = "control"
variant = "control"

[[runs]]
name = "cyb-ap"
variant = "cyb-ap"
hparams = {{ omega = "0:1", gamma = 1.0 }}

[[runs]]
name = "cyb-ap-time"
variant = "cyb-ap"
hparams = {{ omega = "0:1", gamma = 0.9 }}
seeds = [0]
"""


@pytest.fixture(scope="module")
def waiting_built(built):
    """A toy waiting experiment and a typed-in text evaluation, collected next to the paper's."""
    from analysis.evaluation import run_eval

    tmp, _, _, _ = built
    runs, wdb = tmp / "runs", tmp / "waiting.duckdb"
    cfg_path = tmp / "waiting.toml"
    cfg_path.write_text(WAITING.format(out=runs / "waiting-toy", db=wdb, root=ROOT))
    list(experiment.run(experiment.load_config(cfg_path), progress=False))
    sums = tmp / "sums.txt"
    sums.write_text("Ann added 12 + 7 = 19.\nThe total of 3 + 4 + 5 = 12.\nIt was late.\n")
    run_eval(runs / "waiting-toy" / "cyb-ap-1x1-s0", text=sums, db=wdb, run_id="sums-check",
             progress=False)  # fmt: skip
    data = results.collect(tmp / "runs", tmp / "paper.duckdb", tmp / "wdata", min_count=3,
                           waiting_root=tmp / "runs", waiting_dbs=[wdb])  # fmt: skip
    doc = results.render(data, tmp / "wresults.md", figures=False, dataset=DATASET)
    return tmp, wdb, data, doc.read_text()


def _section10(doc: str) -> str:
    return doc[doc.index("## 10. Where waiting pays") : doc.index("## Runs")]


def test_collect_writes_the_waiting_tables(waiting_built):
    tmp, wdb, data, _ = waiting_built
    runs = pd.read_parquet(data / "waiting_runs.parquet")
    assert len(runs) == 10 and set(runs["experiment"]) == {"waiting-toy"}
    assert runs["train_s"].gt(0).all() and runs["val_ppl"].notna().all()
    assert set(runs[runs["name"] == "control"]["w"]) == {2}
    classes = pd.read_parquet(data / "waiting_classes.parquet")
    assert set(classes["token_class"]) == {"answer", "synthetic", "natural"}
    assert "text/sums.txt" in set(classes["dataset"])
    cal = pd.read_parquet(data / "waiting_calibration.parquet")
    assert not cal["run_id"].str.contains("baseline").any()  # W = 1 has no d to calibrate
    curves = pd.read_parquet(data / "waiting_curves.parquet")
    assert curves.groupby("run_id")["step"].max().eq(4).all()
    assert (data / "runs.parquet").exists()  # the paper's tables are still there


def test_section_10_carries_the_database_numbers(waiting_built):
    tmp, wdb, data, doc = waiting_built
    s = _section10(doc)
    assert "### `waiting-toy`" in s
    with store.reading(wdb) as con:
        ev = con.execute("SELECT eval_id, run_id FROM evals WHERE run_id LIKE 'waiting-toy.%'")
        answer_nll = {}
        for eid, rid in ev.fetchall():
            c = classes.class_summary(con, eid).set_index("token_class")
            answer_nll[rid] = c.loc["answer", "nll"]
    base = pd.Series([answer_nll[f"waiting-toy.baseline-1x1-s{k}"] for k in range(3)])
    cell = re.escape(f"{base.mean():.3f} ± {base.std():.3f}")
    assert re.search(rf"\| baseline \| 3 \| [^|]+ \| {cell} \|", s)  # answer nll after ppl
    for name in ("control", "cyb-ap", "cyb-ap-time"):
        assert f"| {name} | " in s
    for run_id in answer_nll:
        assert f"`{run_id}`" in s
    assert "**Gain of waiting**" in s and "| cyb-ap | 3 | " in s


def test_section_10_states_its_verdicts_and_typed_text(waiting_built):
    s = _section10(waiting_built[3])
    for what in ("Pause positions in context", "Waiting", "Pauses and waiting together",
                 "Pauses on answer tokens vs natural ones"):  # fmt: skip
        assert f"- **{what}**" in s
    assert "(control − baseline; negative: control better)" in s
    verdicts = re.findall(r"\*\*(shown|suggestive|not shown|one seed: anecdotal)\*\*", s)
    assert len(verdicts) >= 6
    assert "### Typed-in text" in s and "`sums-check:text/sums.txt:dense`" in s
    assert not re.search(r"\bnan\b", waiting_built[3], re.IGNORECASE)


def test_without_waiting_data_section_10_says_so(built):
    _, _, data, doc = built
    assert not list(data.glob("waiting_*.parquet"))
    assert "No waiting experiment collected yet" in _section10(doc)


def test_waiting_only_update_keeps_the_other_tables(waiting_built, tmp_path):
    tmp, wdb, data, _ = waiting_built
    copy = tmp_path / "data"
    shutil.copytree(tmp / "data", copy)  # the paper-only collection
    before = {f.name: f.read_bytes() for f in copy.glob("*.parquet")}
    assert cyb_main(["results", "collect", "--waiting-only", "--data", str(copy), "--waiting-root",
                         str(tmp / "runs"), "--waiting-db", str(wdb)]) == 0  # fmt: skip
    after = {f.name: f.read_bytes() for f in copy.glob("*.parquet")}
    assert {k: v for k, v in after.items() if k in before} == before
    assert {"waiting_runs.parquet", "waiting_classes.parquet"} <= set(after)


@pytest.mark.parametrize(
    "diffs, verdict",
    [
        ([-1.0, -1.1, -0.9], "shown"),  # 3 agree, |mean| 1.0 > 2 sd 0.2
        ([-1.0, -0.1, -3.0], "suggestive"),  # 3 agree, |mean| 1.37 < 2 sd 2.9
        ([-1.0, -1.1], "suggestive"),  # agree, but 2 seeds cannot show it
        ([-1.0, 0.5, -1.2], "not shown"),  # disagree
        ([-1.0, 0.0, -1.2], "not shown"),  # a zero takes no side
        ([-1.0], "one seed: anecdotal"),
        ([], None),
    ],
)
def test_paired_verdict(diffs, verdict):
    assert seeds.verdict(diffs) == verdict


def test_paired_description_and_wording():
    assert seeds.describe([-1.0, -1.2, 0.1], ".1f") == "-0.7 ± 0.7, 2 of 3 seeds negative"
    assert seeds.paired({0: 2.0, 1: 3.0, 2: float("nan")}, {1: 1.0, 2: 1.0, 0: 1.5}) == [
        0.5,
        2.0,
    ]
    from analysis.results.verdicts import _paired_verdict

    assert _paired_verdict([-31.7, -29.2]) == "suggestive, not shown (2 seeds; shown needs 3)"
    assert _paired_verdict([-3.0, -3.1, -2.9]) is True
