"""The frontier experiments: configs expand as documented, the GPU grid runs at toy scale with
every evaluation mode, and section 11 is rebuilt from what it collects."""

import pytest
from support import ROOT, toy_grid

from analysis import store
from analysis.results import frontier
from cyb import experiment

CONFIGS = ROOT / "configs" / "frontier"
FORCED = ("adaptive", "shuffled", "uniform0", "uniform1", "uniform2", "uniform3")


def test_frontier_configs_expand_with_three_seeds_per_headline_arm():
    for path in sorted(CONFIGS.glob("*.toml")):
        if path.name == "demo.toml":  # one run; its baseline and control are the waiting demo's
            continue
        jobs = experiment.jobs(experiment.load_config(path))
        by_arm: dict[str, list] = {}
        for j in jobs:
            by_arm.setdefault(j.run_id.split(".", 1)[1].rsplit("-1x1", 1)[0], []).append(j)
        assert {"baseline", "control-w4"} <= set(by_arm), path
        budgets = {j.config.tokens for j in jobs}
        assert len(budgets) == 1, path  # equal real-token budgets
        for arm, js in by_arm.items():
            c = js[0].config
            if c.recipe == "variable":  # a setting tried on one seed needs only its own pauses
                assert js[0].modes == (FORCED if len(js) > 1 else ("adaptive",)) or (
                    js[0].modes == FORCED
                ), (path, arm)
            if arm in ("baseline", "control-w4") or len(js) > 1:
                assert len(js) >= 3, (path, arm)


@pytest.mark.slow  # three trainings, eight evaluations, spaCy: a few minutes on 2 cores
def test_the_demo_frontier_shares_the_waiting_demos_text_and_base():
    front = experiment.load_config(CONFIGS / "demo.toml")
    wait = experiment.load_config(ROOT / "configs" / "waiting" / "demo.toml")
    keys = ("root", "split", "max_docs", "max_chars")
    assert [front["eval"][k] for k in keys] == [wait["eval"][k] for k in keys]
    assert front["db"] == wait["db"] and front["defaults"]["init"] == wait["defaults"]["init"]
    (job,) = experiment.jobs(front)
    assert job.modes == FORCED and job.config.recipe == "variable"


def test_the_gpu_grid_runs_at_toy_scale_and_section_11_reads_it(tmp_path):
    cfg = experiment.apply_overrides(
        experiment.load_config(CONFIGS / "gpu.toml"),
        toy_grid(tmp_path / "frontier-gpu", tokens=256, max_chars=200, max_docs=2),
    )
    db = tmp_path / "frontier-gpu.duckdb"
    only = "(baseline|control-w4|cyb-va-r4321)-"
    rows = list(experiment.run(cfg, db=str(db), progress=False, only=only))
    assert {r["mode"] for r in rows} == {"dense", *FORCED}
    with store.reading(db) as con:
        got = dict(
            con.execute("SELECT mode, positions FROM evals WHERE mode LIKE 'uniform%'").fetchall()
        )
    assert got == {f"uniform{k}": 1 + k for k in range(4)}
    tables = frontier.tables(None, [db])
    ev, rho = tables["frontier_evals"], tables["frontier_spearman"]
    assert set(ev["arm"]) == {"baseline", "control-w4", "cyb-va-r4321"}
    assert len(rho) == len(frontier.CLASSES)  # one adaptive evaluation with both partners

    class D:
        frontier_evals, frontier_spearman = ev, rho

    text = "\n".join(frontier.section(D()))
    assert "### `frontier-gpu` on `heldout.d2.c200`" in text
    assert "**cyb-va-r4321**" in text and "placement" in text
