"""Pretrain the shipped base model without pauses and publish it under data/base."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from . import distributed
from . import model as model_lib
from .atomic import atomic_save_dir
from .forward import evaluate_nll
from .packing import split_blocks
from .train import train
from .train_config import TrainConfig


def pretrain(
    cfg: TrainConfig, base_dir: str | Path = model_lib.BASE_DIR, progress: bool = True
) -> dict:
    """Run (or resume) `cfg`, measure held-out perplexity, copy the result to `base_dir`."""
    summary = train(cfg, progress=progress)
    run = Path(cfg.out)
    model = model_lib.load(
        run / "final", device=distributed.resolve_device(cfg.device, distributed.env_world()[2])
    )
    heldout = split_blocks("heldout", model.tokenizer, cfg.seq_len, cfg.data_root)
    result = {
        **summary,
        "n_params": model_lib.n_params(model),
        "heldout": evaluate_nll(model, heldout, replace(cfg, w=1)),
        "heldout_tokens": heldout[:, 1:].numel(),
        "config": json.loads((run / "config.json").read_text()),
    }

    def write(tmp: Path):
        shutil.copytree(run / "final", tmp)
        shutil.copy(run / "log.jsonl", tmp / "train_log.jsonl")
        (tmp / "summary.json").write_text(json.dumps(result, indent=2))

    atomic_save_dir(Path(base_dir), write)
    return result
