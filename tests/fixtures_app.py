"""The app tests' fixture database, built by the real pipeline on tiny inputs (no tests here).

Four run directories as `cyb train` leaves them (config.json, log.jsonl, final/), each a
random tiny model: a W = 4 CYB-AP run, the same settings on half the data (so the "differ
only in data" chart has a pair), a TBYS run with 3 pauses and a baseline (W = 1).

Two datasets, each evaluated densely with run_eval:
  NATURAL  two documents of the fixture held-out split (3,000 characters each), natural text
           only; the three W = 4 runs.
  MIXED    a held-out split written here: the first fixture document and one generated
           synthetic document (cyb_core.synthetic, doc id `synthetic/heldout-00000`), 1,500
           characters each, so its rows carry all three token classes; CYB-AP, TBYS and the
           baseline. The app opens on this dataset and on the CYB-AP run, the one evaluation
           there whose model chooses its own pauses.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import torch
from support import FIXTURE, tiny_model, write_run

RUNS = {  # name: (variant, w, training tokens, data tokens, seed of the random model)
    "ap-full": ("cyb-ap", 4, 8192, 0, 0),
    "ap-half": ("cyb-ap", 4, 4096, 4096, 1),
    "tbys-3": ("tbys", 4, 8192, 0, 2),
    "base": ("baseline", 1, 8192, 0, 3),
}
NATURAL = "fixture/heldout.d2.c3000"
MIXED = "mixed/heldout.c1500"
ON = {NATURAL: ("ap-full", "ap-half", "tbys-3"), MIXED: ("ap-full", "tbys-3", "base")}


def make_app_run(parent: Path, name: str) -> Path:
    """The run `name` of RUNS, its model with larger random embeddings than tiny_model's, so that
    DK and the pauses vary across tokens, and a DK row scaled up: d_i from near 0 to near 1."""
    variant, w, tokens, data_tokens, seed = RUNS[name]
    m = tiny_model(w, variant=variant, seed=seed, spread=0.3)
    with torch.no_grad():
        m.model.get_input_embeddings().weight[m.dk_id] *= 8
    cfg = {
        "init": "data/base",
        "variant": variant,
        "w": w,
        "recipe": "constant",
        "psi": 0.9,
        "hparams": {"omega": "0:0:0:1"} if variant == "cyb-ap" else {},
        "split": "finetune",
        "data_tokens": data_tokens,
        "seq_len": 128,
        "batch_size": 8,
        "tokens": tokens,
        "lr": 1e-3,
        "seed": 0,
    }
    steps = tokens // 1024
    log = [
        {
            "step": s,
            "tokens_seen": 1024 * s,
            "loss": 6.0 - s / steps - 0.3 * seed,
            "lr": 1e-3,
            "mean_expected_pauses": 1.5 - s / (2 * steps),
            "elapsed_s": 2.0 * s,
        }
        for s in range(1, steps + 1)
    ]
    return write_run(parent / name, m, cfg, log)


def mixed_root(parent: Path) -> Path:
    """A corpus folder `mixed/` whose held-out split is one natural and one synthetic document."""
    from cyb_core import synthetic
    from cyb_core.corpus import load_split

    root = parent / "mixed"
    root.mkdir()
    docs = [load_split("heldout", FIXTURE)[0], synthetic.documents("heldout", 1)[0]]
    with gzip.open(root / "heldout.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    return root


@functools.lru_cache(maxsize=1)
def build_db() -> tuple[Path, list[str]]:
    """(database path, eval ids) of the fixture database, built once per process: the NATURAL
    evaluations in RUNS order (ap-full, ap-half, tbys-3), then the MIXED ones (ap-full, tbys-3,
    base)."""
    from analysis.evaluation import run_eval

    tmp = Path(tempfile.mkdtemp(prefix="cyb-app-test-"))
    atexit.register(shutil.rmtree, tmp, True)
    db = tmp / "cyb.duckdb"
    mixed = mixed_root(tmp)
    runs = {name: make_app_run(tmp, name) for name in RUNS}
    ids = []
    for dataset, chars, root, docs in ((NATURAL, 3000, FIXTURE, 2), (MIXED, 1500, mixed, None)):
        for name in ON[dataset]:
            summary = run_eval(
                runs[name],
                split="heldout",
                root=root,
                db=db,
                max_docs=docs,
                max_chars=chars,
                progress=False,
            )
            assert summary["eval_id"].split(":")[1] == dataset
            ids.append(summary["eval_id"])
    for run in runs.values():
        shutil.rmtree(run / "final")  # the weights are not needed any more
    return db, ids


def empty_db(parent: Path) -> Path:
    """A database with the schema and no evaluation."""
    from analysis import store

    path = parent / "empty.duckdb"
    with store.connect_write(path):
        pass
    return path
