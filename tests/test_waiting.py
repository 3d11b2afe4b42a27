"""The waiting experiments: configs expand as documented, and the GPU grid runs at toy scale."""

from support import ROOT, tokenizer, toy_grid

from analysis import classes, store
from cyb import experiment
from cyb_core import model as model_lib

CONFIGS = ROOT / "configs" / "waiting"


def _params(init: str) -> int:
    return model_lib.n_params(model_lib.new_base(tokenizer(), init.split(":", 1)[1]))


HEADLINE = {  # config -> run names whose comparisons carry a claim: >= 3 seeds each
    "scratch.toml": ("baseline", "control", "tbys-3", "cyb-ap", "cyb-ap-time"),
    "gpu.toml": ("baseline", "control", "tbys-3", "cyb-ap", "cyb-ap-time"),
    "finetune.toml": ("control", "cyb-ap-time"),
}


def test_every_waiting_config_expands_and_headline_runs_have_three_seeds():
    for path in sorted(CONFIGS.glob("*.toml")):
        jobs = experiment.jobs(experiment.load_config(path))
        by_name = {}
        for j in jobs:
            by_name.setdefault(j.run_id.split(".", 1)[1].rsplit("-1x1", 1)[0], []).append(j)
        for name in HEADLINE.get(path.name, ()):
            assert len(by_name[name]) >= 3, (path, name)
        for name, js in by_name.items():
            for j in js:
                assert j.config.w == (1 if j.config.variant == "baseline" else 4), (path, name)
                assert j.config.mask_pauses and j.config.data_root == "data/mixed", (path, name)


def test_the_gpu_grid_is_at_least_ten_times_the_cpu_grid():
    cpu = experiment.load_config(CONFIGS / "scratch.toml")["defaults"]["init"]
    gpu = experiment.load_config(CONFIGS / "gpu.toml")["defaults"]["init"]
    assert _params(gpu) >= 10 * _params(cpu)


def test_the_gpu_grid_runs_at_toy_scale_on_cpu(tmp_path):
    cfg = experiment.apply_overrides(
        experiment.load_config(CONFIGS / "gpu.toml"),
        toy_grid(tmp_path / "waiting-gpu", tokens=512, max_chars=150, max_docs=12),
    )
    db = tmp_path / "w.duckdb"
    rows = list(experiment.run(cfg, db=str(db), progress=False, only="(baseline|cyb-ap-time)-"))
    assert {r["run_id"].split(".")[1] for r in rows} == {"baseline-1x1-s0", "cyb-ap-time-1x1-s0"}
    with store.reading(db) as con:
        summary = classes.class_summary(con, rows[1]["eval_id"])
    assert set(summary["token_class"]) == {"answer", "synthetic", "natural"}
