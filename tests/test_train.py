import json
import math
from pathlib import Path

import pytest

from cyb_core import model as model_lib
from cyb_core.train import TrainConfig, lr_at, train

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = str(ROOT / "data" / "fixture")
TOKENIZER = str(ROOT / "data" / "tokenizer")


def tiny_config(out, **kw) -> TrainConfig:
    base = dict(out=str(out), init="scratch:tiny", tokenizer=TOKENIZER, data_root=FIXTURE, split="finetune",
                seq_len=16, batch_size=4, tokens=16 * 4 * 6, lr=3e-3, eval_every=3, ckpt_every=2,
                val_blocks=4, device="cpu")
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
    ("cyb-ap", 4, {"omega": "0:0:0:1", "gamma": 1.0}),
    ("cyb-va", 4, {"rho": "1:1:1:1"}),
    ("cyb-dp", 4, {"rho": "1:1:1:1", "alpha": 0.01}),
    ("cyb-ap", 3, {"omega": "1:1:2"}),
]


@pytest.mark.parametrize("variant,w,hparams", VARIANTS)
def test_tiny_finetune_every_variant(variant, w, hparams, tiny_base, tmp_path):
    cfg = tiny_config(tmp_path / "run", init=tiny_base, variant=variant, w=w, hparams=hparams,
                      recipe="variable" if variant == "cyb-ap" and w == 3 else "constant")
    summary = train(cfg, progress=False)
    assert math.isfinite(summary["final_loss"]) and math.isfinite(summary["val"]["ppl"])
    assert summary["tokens_seen"] == cfg.steps * cfg.batch_size * cfg.seq_len
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, cfg.steps + 1))
    m = model_lib.load(tmp_path / "run" / "final")
    assert (m.settings.variant, m.settings.w) == (variant, w)
    if w > 1:
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
