import json
import math
import os

import pytest
import torch
from support import ROOT

from cyb_core import model as model_lib
from cyb_core.train import train
from cyb_core.train_config import POSITIVE, TrainConfig, lr_at

FIXTURE = str(ROOT / "data" / "fixture")
TOKENIZER = str(ROOT / "data" / "tokenizer")


def tiny_config(out, **kw) -> TrainConfig:
    base = dict(
        out=str(out),
        init="scratch:tiny",
        tokenizer=TOKENIZER,
        data_root=FIXTURE,
        split="finetune",
        seq_len=16,
        batch_size=4,
        tokens=16 * 4 * 6,
        lr=3e-3,
        eval_every=3,
        ckpt_every=2,
        val_blocks=4,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny pretrained-from-nothing checkpoint to fine-tune from."""
    out = tmp_path_factory.mktemp("base")
    train(tiny_config(out / "run", split="pretrain"), progress=False)
    return str(out / "run" / "final")


VARIANTS = [
    ("baseline", 1, {}),
    ("tbys", 4, {}),
    ("control", 4, {}),
    ("cyb-ap", 4, {"omega": "0:0:0:1", "gamma": 1.0}),
    ("cyb-va", 4, {"rho": "1:1:1:1"}),
    ("cyb-dp", 4, {"rho": "1:1:1:1", "alpha": 0.01}),
    ("cyb-ap", 3, {"omega": "1:1:2"}),
]


@pytest.mark.parametrize("variant,w,hparams", VARIANTS)
def test_tiny_finetune_every_variant(variant, w, hparams, tiny_base, tmp_path):
    cfg = tiny_config(
        tmp_path / "run",
        init=tiny_base,
        variant=variant,
        w=w,
        hparams=hparams,
        recipe="variable" if variant == "cyb-ap" and w == 3 else "constant",
    )
    summary = train(cfg, progress=False)
    assert math.isfinite(summary["final_loss"]) and math.isfinite(summary["val"]["ppl"])
    assert summary["tokens_seen"] == cfg.steps * cfg.batch_size * cfg.seq_len
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, cfg.steps + 1))
    m = model_lib.load(tmp_path / "run" / "final")
    assert (m.settings.variant, m.settings.w) == (variant, w)
    if variant == "control":  # answers at the real token's own step, by construction
        assert summary["val"]["expected_pauses"] == 0.0
    elif w > 1:
        assert 0.0 < summary["val"]["expected_pauses"] < w - 1 + 1e-6


def test_resume_matches_uninterrupted(tiny_base, tmp_path):
    kw = dict(init=tiny_base, variant="cyb-ap", w=3, hparams={"omega": "1:1:2"}, recipe="variable")
    full = train(tiny_config(tmp_path / "full", **kw), progress=False)
    cut = tiny_config(tmp_path / "cut", **kw)
    assert train(cut, progress=False, stop_after=3) == {"stopped_at": 3}
    assert (tmp_path / "cut" / "ckpt").exists() and not (tmp_path / "cut" / "final").exists()
    resumed = train(cut, progress=False)
    assert resumed["final_loss"] == pytest.approx(full["final_loss"], rel=1e-4)
    assert resumed["val"]["ppl"] == pytest.approx(full["val"]["ppl"], rel=1e-4)
    log = [json.loads(x)["step"] for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert log == list(range(1, cut.steps + 1))


def test_changed_config_is_refused(tiny_base, tmp_path):
    train(tiny_config(tmp_path / "run", init=tiny_base, tokens=64), progress=False)
    with pytest.raises(ValueError, match="different config"):
        train(tiny_config(tmp_path / "run", init=tiny_base, tokens=128), progress=False)


def test_lr_schedule_warmup_then_cosine_to_one_percent(tmp_path):
    cfg = tiny_config(tmp_path, tokens=16 * 4 * 100, lr=1.0, warmup=0.1)
    lrs = [lr_at(s, cfg) for s in range(cfg.steps)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))


def test_bad_configs_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        tiny_config(tmp_path, variant="cyb-xx", w=4)
    with pytest.raises(ValueError):
        tiny_config(tmp_path, variant="cyb-va", w=4, hparams={"rho": "1:0:1:1"})
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(tmp_path, batch_size=4, grad_accum=3)


def test_run_written_before_a_new_setting_still_resumes(tiny_base, tmp_path):
    cfg = tiny_config(tmp_path / "run", init=tiny_base, tokens=64)
    train(cfg, progress=False)
    path = tmp_path / "run" / "config.json"
    stored = json.loads(path.read_text())
    del stored["pause_init"]  # as written before the setting existed
    path.write_text(json.dumps(stored))
    assert "val" in train(cfg, progress=False)  # at its default: the same run
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="different config"):
        train(
            tiny_config(tmp_path / "run", init=tiny_base, tokens=64, pause_init="mean"),
            progress=False,
        )


def test_pause_init_mean_sets_pause_rows_to_the_mean_real_embedding(tiny_base, tmp_path):
    from cyb_core.train import _init_model

    keep = _init_model(tiny_config(tmp_path, init=tiny_base, variant="tbys", w=4))
    mean = _init_model(
        tiny_config(tmp_path, init=tiny_base, variant="tbys", w=4, pause_init="mean")
    )
    e_keep, e_mean = (
        keep.model.get_input_embeddings().weight,
        mean.model.get_input_embeddings().weight,
    )
    special = set(keep.pause_ids) | {keep.dk_id, keep.pad_id, keep.eot_id}
    real = [i for i in range(e_keep.shape[0]) if i not in special]
    target = e_keep[real].mean(0)
    for i in keep.pause_ids:
        assert (e_mean[i] - target).abs().max() < 1e-6 and (e_keep[i] - target).abs().max() > 1e-3
    others = [i for i in range(e_keep.shape[0]) if i not in keep.pause_ids]
    assert (e_mean[others] == e_keep[others]).all()
    with pytest.raises(ValueError, match="pause_init"):
        tiny_config(tmp_path, pause_init="zeros")


def test_masked_pauses_are_never_predicted_and_survive_a_reload(tiny_base, tmp_path):
    from cyb_core import model as model_lib

    cfg = tiny_config(tmp_path / "run", init=tiny_base, variant="control", w=4, mask_pauses=True)
    train(cfg, progress=False)
    m = model_lib.load(tmp_path / "run" / "final")
    assert m.settings.mask_pauses and m.settings.variant == "control"
    logits, _ = m(torch.tensor([[20, 30, 40]]))
    assert torch.isneginf(logits[..., m.pause_ids]).all()
    assert torch.isfinite(logits[..., m.dk_id]).all()


@pytest.mark.parametrize("field,flag", list(POSITIVE.items()))
def test_non_positive_numeric_options_are_refused_with_their_flag(field, flag, tmp_path):
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"{field} must be a positive integer.*{flag}"):
            tiny_config(tmp_path, **{field: bad})


def test_a_failed_start_writes_nothing_and_the_corrected_rerun_runs(tmp_path, capsys):
    from cyb.cli import main

    out = tmp_path / "tr" / "m"
    base = ["train", "--out", str(out), "--data-root", FIXTURE, "--split", "finetune"]
    small = ["--seq-len", "16", "--batch-size", "4", "--tokens", "64", "--device", "cpu"]
    small += ["--variant", "baseline"]
    assert main([*base, "--init", str(tmp_path / "nope"), *small]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cyb train: error: cannot load --init")
    assert "Traceback" not in err[0]
    assert not (tmp_path / "tr").exists()  # nothing written, not even the run folder
    assert main([*base, "--init", "scratch:tiny", "--grad-accum", "0", *small]) == 1
    assert "--grad-accum 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "tr").exists()
    assert main([*base, "--init", "scratch:tiny", *small]) == 0  # the corrected command
    assert (out / "final" / "summary.json").exists()


def test_an_output_folder_that_cannot_be_written_is_one_error_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        train(tiny_config(blocker / "run"), progress=False)
    with pytest.raises(ValueError, match="is a file, not a directory"):
        train(tiny_config(blocker), progress=False)
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_error_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="cannot write to"):
            train(tiny_config(ro / "run"), progress=False)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)
