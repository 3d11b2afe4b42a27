"""Shared test helpers (no tests here): paths, tiny models, run directories, references.

Everything expensive is built once per test process: the tiny run (a random W = 3 model
saved as runs/<name>/final with config.json and log.jsonl), its dense evaluation on the
truncated fixture held-out split, and the spaCy pipeline (analysis.pos.load_nlp is cached).
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from cyb_core.eval_result import EvalResult

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "data" / "fixture"
MAX_CHARS = 1500  # per fixture document: ~2,000 tokens in all
PROMPTS = ["The cat", "Alice didn't know what to say to the", "Yes"]  # different lengths
DOCS = ["The patients wasn't happy, but they won.", "Alice didn't know. " * 6, "Yes."]
SHORT_DOCS = [DOCS[0], "Alice didn't know. " * 4, DOCS[2]]  # the decoding tests': fewer tokens
# Rows that pause differently: the tiny model's d spreads around this value.
VARIED = dict(readout="threshold", dk_threshold=0.08)


def scratch() -> Path:
    d = Path(tempfile.mkdtemp(prefix="cyb-store-test-"))
    atexit.register(shutil.rmtree, d, True)
    return d


@functools.lru_cache(maxsize=1)
def tokenizer():
    from cyb_core import tokenizer as tok_lib

    return tok_lib.load(ROOT / "data" / "tokenizer")


def tiny_model(
    w: int = 3,
    *,
    variant: str = "cyb-ap",
    psi: float = 0.9,
    seed: int = 0,
    spread: float | None = 0.2,
):
    """A random model of the "tiny" preset with CYB settings, in eval mode.

    spread: the standard deviation of fresh random embedding rows (random, not tied-zero, rows
    so that DK and the pauses matter), drawn after reseeding torch with `seed`; None keeps
    new_base's rows and leaves the global generator where new_base left it."""
    from cyb_core import model as model_lib

    m = model_lib.new_base(tokenizer(), "tiny", seed=seed)
    if spread is not None:
        torch.manual_seed(seed)
        with torch.no_grad():
            m.model.get_input_embeddings().weight.normal_(0, spread)
    return m.with_settings(w=w, psi=psi, variant=variant).eval()


def toy_grid(out: Path, *, tokens: int, max_chars: int, max_docs: int) -> list[str]:
    """Overrides that run an experiment grid at toy scale on the CPU: a tiny model from scratch,
    a few steps of 8 x 16 tokens, one seed, a small evaluation."""
    return [
        f"out={out}",
        "init=scratch:tiny",
        f"tokens={tokens}",
        "seq_len=16",
        "batch_size=8",
        "val_blocks=2",
        "eval_every=2",
        "ckpt_every=100",
        "device=cpu",
        f"eval.max_chars={max_chars}",
        f"eval.max_docs={max_docs}",
        "grid.seeds=[0]",
    ]


def write_run(run: Path, model, config: dict, log: list[dict], tail: str = "") -> Path:
    """A run directory as `cyb train` leaves it: final/ (the model), config.json (`config`, with
    "out" the run directory first) and log.jsonl (one line per row of `log`, then `tail`)."""
    model.save(run / "final")
    (run / "config.json").write_text(json.dumps({"out": str(run), **config}))
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + tail)
    return run


def make_run(parent: Path, name: str = "tiny-cyb", w: int = 3, variant: str = "cyb-ap") -> Path:
    """A tiny random run whose log ends in a torn line."""
    cfg = {
        "init": "data/base",
        "variant": variant,
        "w": w,
        "recipe": "constant",
        "seed": 7,
        "tokens": 4096,
        "hparams": {"omega": "0:0:1"},
    }
    log = [
        {
            "step": s,
            "tokens_seen": 1024 * s,
            "loss": 5.0 - s / 10,
            "lr": 1e-3,
            "mean_expected_pauses": 1.0,
            "elapsed_s": float(s),
        }
        for s in range(1, 5)
    ]
    return write_run(parent / name, tiny_model(w, variant=variant), cfg, log, '{"step": 5, "tok')


@functools.lru_cache(maxsize=1)
def fixture_db() -> tuple[Path, Path, dict]:
    """(db path, run dir, summary) of one dense evaluation of the tiny run on fixture/heldout."""
    from analysis.evaluation import run_eval

    tmp = scratch()
    run = make_run(tmp)
    db = tmp / "cyb.duckdb"
    summary = run_eval(
        run, split="heldout", root=FIXTURE, db=db, max_chars=MAX_CHARS, seq_len=64, progress=False
    )
    return db, run, summary


def synthetic_result(
    n_docs: int = 2, n: int = 40, w: int = 3, adaptive: bool = False, seed: int = 0
) -> EvalResult:
    """An EvalResult with consistent d, t, s, nll; adaptive: pauses sampled, s one-hot, NaN past the answer."""
    rng = np.random.default_rng(seed)
    N = n_docs * n
    d = rng.uniform(0.05, 0.95, (N, w - 1))
    t = rng.uniform(0.01, 0.9, (N, w))
    dd = np.concatenate([d, np.zeros((N, 1))], 1)
    keep = np.concatenate([np.ones((N, 1)), np.cumprod(dd[:, :-1], 1)], 1)
    s = keep * (1 - dd)
    pauses = None
    if adaptive:
        pauses = rng.integers(0, w, N)
        s = np.eye(w)[pauses]
        steps = np.arange(w)[None, :]
        t = np.where(steps <= pauses[:, None], t, np.nan)
        d = np.where(steps[:, : w - 1] <= pauses[:, None], d, np.nan)
        nll = -np.log(t[np.arange(N), pauses])
        expected = greedy = pauses
    else:
        nll = -np.log((s * t).sum(1))
        expected = (s * np.arange(w)).sum(1)
        greedy = np.argmax(np.concatenate([d < 0.5, np.ones((N, 1), bool)], 1), 1)
    doc = np.repeat(np.arange(n_docs), n)
    idx = np.tile(np.arange(n), n_docs)
    ids = rng.integers(20, 200, N)
    return EvalResult(
        doc=doc,
        idx=idx,
        token_id=ids,
        next_id=np.roll(ids, -1),
        char_start=idx * 2,
        char_end=idx * 2 + 2,
        d=d,
        t=t,
        s=s,
        expected_pauses=expected.astype(float),
        greedy_pauses=greedy,
        nll=nll,
        correct=rng.random(N) < 0.3,
        pauses=pauses,
    )


RUN = {  # a runs row for synthetic evaluations
    "run_id": "synthetic",
    "variant": "cyb-ap",
    "recipe": "variable",
    "w_max": 3,
    "params": {},
    "seed": 0,
    "train_tokens": None,
    "base": None,
    "status": "checkpoint",
}


def synthetic_tables(adaptive: bool = False, w: int = 3, seed: int = 0):
    """(EvalResult, tables for write_eval) of a synthetic evaluation, spaCy-tagged."""
    from analysis import pos
    from analysis.evaluation import build_tables

    docs = synthetic_docs()
    result = synthetic_result(w=w, adaptive=adaptive, seed=seed)
    return result, build_tables(result, docs, pos.tag_texts([d["text"] for d in docs]), tokenizer())


def synthetic_docs(n_docs: int = 2, n: int = 40) -> list[dict]:
    """Texts whose 2-character spans line up with synthetic_result's tokens."""
    return [
        {"doc_id": f"doc{j}", "text": "".join(" a" if i % 3 else "Xy" for i in range(n))}
        for j in range(n_docs)
    ]


def token_rows(con, eval_id: str, limit: int | None = None):
    """Raw token rows of one evaluation in document order (the `tokens` view), a DataFrame;
    the single-precision columns as float64 (so references computed from them in pandas are
    as exact as DuckDB's double-precision aggregates)."""
    from analysis.store import require_eval

    require_eval(con, eval_id)
    df = con.execute(
        "SELECT * FROM tokens WHERE eval_id = ? ORDER BY doc_id, idx LIMIT ?", [eval_id, limit]
    ).df()
    for c in ("dk", "t", "s"):  # lists of float32 -> float64 arrays
        df[c] = [None if v is None else np.asarray(v, dtype=np.float64) for v in df[c]]
    return df.astype({c: "float64" for c in df.columns if df[c].dtype == "float32"})


def as_version_3(path) -> None:
    """Turn a database of this schema into one as schema version 3 stored it (one `tokens`
    table of DOUBLE lists, no vocab, no summaries, words per evaluation), to test the upgrade."""
    import duckdb

    from analysis import summaries

    with duckdb.connect(str(path)) as con:
        con.execute(
            """CREATE TABLE tokens_old AS SELECT * REPLACE (
                   dk::DOUBLE[] AS dk, t::DOUBLE[] AS t, s::DOUBLE[] AS s,
                   expected_pauses::DOUBLE AS expected_pauses, nll::DOUBLE AS nll,
                   greedy_pauses::INTEGER AS greedy_pauses, pauses::INTEGER AS pauses,
                   char_end::INTEGER AS char_end)
               FROM tokens"""
        )
        con.execute("DROP VIEW tokens")
        for table in ("token_rows", "vocab", *summaries.SUMMARY_TABLES):
            con.execute(f"DROP TABLE {table}")
        con.execute("ALTER TABLE tokens_old RENAME TO tokens")
        con.execute("ALTER TABLE evals DROP COLUMN tokens_key")
        # the words as version 3 stored them: one table keyed by eval_id
        con.execute("CREATE TABLE words_old AS SELECT * FROM words")
        con.execute("DROP VIEW words")
        con.execute("DROP TABLE text_words")
        con.execute("ALTER TABLE words_old RENAME TO words")
        con.execute("ALTER TABLE evals DROP COLUMN text_key")
        con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
