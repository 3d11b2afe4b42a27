import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ROOT

from analysis import store
from cyb import experiment

CONFIG = """
out = "{out}"
db = "{db}"

[defaults]
init = "scratch:tiny"
tokenizer = "{root}/data/tokenizer"
data_root = "{root}/data/fixture"
seq_len = 16
batch_size = 4
tokens = 1024
lr = 3e-3
eval_every = 4
ckpt_every = 2
val_blocks = 4
device = "cpu"

[eval]
split = "heldout"
modes = ["dense"]
max_docs = 1
max_chars = 1500

[grid]
seeds = [0]
regimes = ["1x1"]

[[runs]]
name = "base"
variant = "baseline"

[[runs]]
name = "ap"
variant = "cyb-ap"
w = 3
hparams = {{ omega = "0:0:1" }}
"""


def write_config(tmp_path) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(CONFIG.format(out=tmp_path / "runs", db=tmp_path / "cyb.duckdb", root=ROOT))
    return path


def test_grid_expands_regimes_and_seeds(tmp_path):
    cfg = experiment.load_config(write_config(tmp_path))
    cfg["grid"] = {"seeds": [0, 1], "regimes": ["1x1", "2x1", "1x2", "1x3"]}
    jobs = experiment.jobs(cfg)
    assert len(jobs) == 2 * 2 * 4
    by_id = {j.run_id: j.config for j in jobs}
    assert by_id["runs.ap-2x1-s1"].tokens == 2048 and by_id["runs.ap-2x1-s1"].data_tokens == 1024
    assert by_id["runs.ap-1x3-s0"].tokens == 3072 and by_id["runs.ap-1x3-s0"].data_tokens == 3072
    assert by_id["runs.base-1x1-s0"].w == 1 and by_id["runs.ap-1x1-s0"].w == 3
    assert by_id["runs.ap-1x1-s0"].out.endswith("runs/ap-1x1-s0")


def test_run_level_seeds_and_regimes_override_the_grid(tmp_path):
    cfg = experiment.load_config(write_config(tmp_path))
    cfg["grid"] = {"seeds": [0], "regimes": ["1x1"]}
    cfg["runs"][0]["seeds"] = [0, 1, 2]
    cfg["runs"][1]["regimes"] = ["2x1", "1x3"]
    ids = {j.run_id for j in experiment.jobs(cfg)}
    first, second = cfg["runs"][0]["name"], cfg["runs"][1]["name"]
    assert {i for i in ids if f".{first}-" in i} == {f"runs.{first}-1x1-s{s}" for s in range(3)}
    assert {i for i in ids if f".{second}-" in i} == {
        f"runs.{second}-2x1-s0",
        f"runs.{second}-1x3-s0",
    }


@pytest.mark.parametrize(
    "bad,needle",
    [
        ({"runs": [{"name": "x", "variant": "cyb-ap", "bogus": 1}]}, "unknown setting"),
        ({"runs": [{"name": "x"}, {"name": "x"}]}, "share a name"),
        ({"runs": [{"name": "x"}], "grid": {"regimes": ["9x9"]}}, "data regime"),
        ({"runs": [{"name": "a:b"}]}, "needs a name"),
    ],
)
def test_bad_grids_name_the_problem(bad, needle):
    with pytest.raises(ValueError, match=needle):
        experiment.jobs(bad)


@pytest.mark.parametrize(
    "text,needle", [("runs = []\n", "no \\[\\[runs\\]\\]"), ("runs = [\n", "not valid TOML")]
)
def test_bad_config_files_name_the_problem(text, needle, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle):
        experiment.load_config(path)
    with pytest.raises(FileNotFoundError, match="no experiment config"):
        experiment.load_config(tmp_path / "missing.toml")


def test_overrides_reach_defaults_eval_and_grid(tmp_path):
    cfg = experiment.apply_overrides(
        experiment.load_config(write_config(tmp_path)),
        ["tokens=2048", "eval.max_chars=0", "grid.seeds=[1, 2]", "out=elsewhere"],
    )
    assert cfg["defaults"]["tokens"] == 2048 and cfg["eval"]["max_chars"] == 0
    assert cfg["grid"]["seeds"] == [1, 2] and cfg["out"] == "elsewhere"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        experiment.apply_overrides(cfg, ["tokens"])


def test_killed_experiment_resumes_and_completes_each_run_once(tmp_path):
    cfg_path = write_config(tmp_path)
    cmd = [sys.executable, "-m", "cyb", "experiment", str(cfg_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "runs" / "base-1x1-s0" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "runs" / "ap-1x1-s0" / "final").exists()  # killed mid-way

    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    again = subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)  # the whole of stdout is one JSON object
    assert [
        (e["eval_id"], e["trained_now"], e["evaluated_now"]) for e in summary["evaluations"]
    ] == [
        ("runs.base-1x1-s0:fixture/heldout.d1.c1500:dense", False, False),
        ("runs.ap-1x1-s0:fixture/heldout.d1.c1500:dense", False, False),
    ]

    with store.reading(tmp_path / "cyb.duckdb") as con:
        runs = con.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
        evals = con.execute("SELECT run_id, status FROM evals ORDER BY run_id").fetchall()
        steps = con.execute(
            "SELECT run_id, count(*), count(DISTINCT step), max(step) FROM train_log "
            "GROUP BY run_id ORDER BY run_id"
        ).fetchall()
    assert runs == [("runs.ap-1x1-s0", "complete"), ("runs.base-1x1-s0", "complete")]
    assert evals == [("runs.ap-1x1-s0", "complete"), ("runs.base-1x1-s0", "complete")]
    assert steps == [("runs.ap-1x1-s0", 16, 16, 16), ("runs.base-1x1-s0", 16, 16, 16)]


def test_a_run_has_one_id_whichever_command_registers_it(tmp_path):
    """The runner records its id in the run directory, `cyb eval DIR` reads it, and `cyb eval ID`
    finds the stored checkpoint of any run id in the database (also one an older version gave)."""
    from analysis.eval_inputs import EvalError
    from analysis.eval_targets import record_run_id, resolve_target, run_id_of
    from analysis.evaluation import run_eval

    cfg = experiment.load_config(write_config(tmp_path))
    cfg["runs"], cfg["defaults"]["tokens"], cfg["eval"]["max_chars"] = cfg["runs"][:1], 256, 200
    rows = list(experiment.run(cfg, progress=False))
    run_dir, db = tmp_path / "runs" / "base-1x1-s0", tmp_path / "cyb.duckdb"
    assert rows[0]["run_id"] == run_id_of(run_dir) == "runs.base-1x1-s0"
    for target in (run_dir, run_dir / "final", "runs.base-1x1-s0"):
        assert resolve_target(target, db=db).run_id == "runs.base-1x1-s0"
    assert resolve_target(run_dir, run_id="custom").run_id == "custom"

    text = tmp_path / "story.txt"
    text.write_text("The students didn't know. " * 4)
    s = run_eval(run_dir, text=text, db=db, max_chars=60, progress=False)
    assert s["eval_id"] == "runs.base-1x1-s0:text/story.txt.c60:dense"
    run_eval(run_dir, text=text, db=db, run_id="old-name", max_chars=60, progress=False)
    s = run_eval("old-name", text=text, db=db, max_chars=40, progress=False)  # by its id
    assert s["eval_id"] == "old-name:text/story.txt.c40:dense"
    with store.reading(db) as con:
        assert con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall() == [
            ("old-name",),
            ("runs.base-1x1-s0",),
        ]
    with pytest.raises(EvalError, match="no run 'ghost' in"):
        resolve_target("ghost", db=db)
    record_run_id(run_dir, "renamed")  # idempotent rewrite, read back
    assert run_id_of(run_dir) == "renamed"
