"""Render time of every app page over a large synthetic store.

Builds a database with two W = 4 runs evaluated on the same 1,000,000 tokens (bulk insert
through analysis.store.write_eval: Parquet shards loaded in one transaction), with
Zipf-distributed token types, a part of speech per type, per-type pause tendencies and
per-token noise, d_i -> s_i -> E[S] as the model computes them, t_i rising with the pauses
where d_i was high (so calibration is positive) and a training log per run. Then renders each
page with streamlit's AppTest: the first render (queries run) and a re-render (cached), once
with the run alone and once compared with the other run. Prints `name: value` lines.

    .venv/bin/python benchmarks/bench_app.py [--tokens 1000000] [--db PATH] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import store  # noqa: E402

W = 4
DOC_TOKENS = 2000
PAGES = ["runs", "text", "latency", "tokens", "linguistics", "calibration", "export"]
# part of speech: share of types, Penn tags (with Number), pause tendency (logit shift)
POS = {
    "NOUN": (0.30, [("NN", "Number=Sing"), ("NNS", "Number=Plur")], 0.4),
    "VERB": (0.18, [("VB", "VerbForm=Inf"), ("VBD", "Tense=Past"), ("VBZ", "Number=Sing")], 0.2),
    "ADJ": (0.14, [("JJ", "Degree=Pos")], 0.3),
    "PROPN": (0.12, [("NNP", "Number=Sing")], 0.6),
    "ADV": (0.08, [("RB", "")], 0.0),
    "NUM": (0.04, [("CD", "NumType=Card")], 0.5),
    "ADP": (0.03, [("IN", "")], -0.6),
    "DET": (0.02, [("DT", "")], -0.8),
    "PRON": (0.03, [("PRP", "")], -0.5),
    "AUX": (0.02, [("VBD", "Tense=Past")], -0.9),
    "CCONJ": (0.01, [("CC", "")], -0.7),
    "PART": (0.01, [("RB", "Polarity=Neg")], -1.2),
    "PUNCT": (0.02, [(".", "")], -1.5),
}
SYLLABLES = "ba be bi bo da de di do ka ke ki ko la le li lo ma me mi mo na ne ni no ra re ri ro sa se si so ta te ti to ve vi".split()


def vocabulary(rng, n_types: int):
    """(strings, upos, tag, morph, pause tendency, noise scale) per type; frequent types first."""
    names = list(POS)
    share = np.array([POS[p][0] for p in names])
    upos = rng.choice(len(names), n_types, p=share / share.sum())
    upos[:6] = [names.index(p) for p in ("DET", "ADP", "PUNCT", "PUNCT", "CCONJ", "PRON")]
    words, tags, morphs, tendency = [], [], [], []
    punct = iter([".", ",", ";", ":", "?", "!", '"', "(", ")", "-"] * n_types)
    for k, u in enumerate(upos):
        pos = names[u]
        tag, morph = POS[pos][1][rng.integers(len(POS[pos][1]))]
        if pos == "PUNCT":
            word = next(punct)
        else:
            word = "".join(rng.choice(SYLLABLES, 1 + min(k // 300, 3) + rng.integers(2)))
            word = " " + (word.capitalize() if pos == "PROPN" else word)
            word += "s" if tag == "NNS" else ""
        words.append(word)
        tags.append(tag)
        morphs.append(morph)
        tendency.append(POS[pos][2] + (0.5 if tag == "NNS" else 0.0))
    words[:2] = [" the", " of"]
    words[rng.integers(100, 400)] = " won"
    tendency = np.array(tendency) + rng.normal(0, 0.8, n_types)
    noise = rng.uniform(0.2, 1.6, n_types)  # some types depend on context much more than others
    return (
        np.array(words, object),
        np.array(names)[upos],
        np.array(tags),
        np.array(morphs),
        tendency,
        noise,
    )


def _lists(a: np.ndarray) -> pa.ListArray:
    n, k = a.shape
    return pa.ListArray.from_arrays(
        pa.array(np.arange(n + 1, dtype=np.int32) * k), pa.array(a.reshape(-1))
    )


def pauses(rng, types, tendency, noise, shift: float):
    """d (N, W-1), t (N, W), s (N, W) for one run; `shift` moves every d_i's logit."""
    n = len(types)
    z = tendency[types] + noise[types] * rng.normal(0, 1, n)  # (N,)
    offsets = np.array([-0.4, -0.6, -0.2]) + shift  # (W-1,)
    d = 1 / (1 + np.exp(-(z[:, None] * 1.6 + offsets + rng.normal(0, 0.7, (n, W - 1)))))
    keep = np.concatenate([np.ones((n, 1)), np.cumprod(d, 1)], 1)  # (N, W)
    s = keep * np.concatenate([1 - d, np.ones((n, 1))], 1)
    t = np.empty((n, W))
    t[:, 0] = 1 / (1 + np.exp(-rng.normal(-1.5, 1.5, n)))
    for i in range(W - 1):  # a pause helps where DK was high
        gain = np.clip(d[:, i] * rng.beta(2, 5, n) + rng.normal(-0.02, 0.12, n), -0.3, 0.9)
        t[:, i + 1] = np.clip(t[:, i] + (1 - t[:, i]) * gain, 1e-6, 1 - 1e-6)
    return d, t, s


def build(db: Path, n_tokens: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    words, upos, tags, morphs, tendency, noise = vocabulary(rng, 8000)
    n_docs = max(1, n_tokens // DOC_TOKENS)
    n = n_docs * DOC_TOKENS
    zipf = 1 / np.arange(1, len(words) + 1) ** 1.07
    types = rng.choice(len(words), n, p=zipf / zipf.sum()).astype(np.int32)
    lens = np.array([len(w) for w in words])[types].reshape(n_docs, DOC_TOKENS)
    end = np.cumsum(lens, 1)
    start = (end - lens).reshape(-1)
    end = end.reshape(-1)
    doc = np.repeat(np.arange(n_docs), DOC_TOKENS)
    idx = np.tile(np.arange(DOC_TOKENS), n_docs)
    doc_names = pa.array([f"doc{j:04d}" for j in range(n_docs)])
    texts = ["".join(words[types[j * DOC_TOKENS : (j + 1) * DOC_TOKENS]]) for j in range(n_docs)]
    nxt = np.roll(types, -1)
    nxt[idx == DOC_TOKENS - 1] = 0  # end of document: predicts <|endoftext|>-like id 0
    vocab = pa.array(list(words))
    stripped = pa.array([w.strip() for w in words])
    take = pa.array(types)
    lead = np.array([w.startswith(" ") for w in words])[types]
    common = {
        "doc_id": doc_names.take(pa.array(doc)),
        "idx": pa.array(idx, pa.int32()),
        "token_id": take,
        "token": vocab.take(take),
        "next_id": pa.array(nxt),
        "next_token": vocab.take(pa.array(nxt)),
        "char_start": pa.array(start, pa.int32()),
        "char_end": pa.array(end, pa.int32()),
        "word": stripped.take(take),
        "upos": pa.array(upos).take(take),
        "tag": pa.array(tags).take(take),
        "morph": pa.array(morphs).take(take),
        "word_start": pa.array(rng.random(n) < 0.85),
    }
    docs = pa.table({"doc_id": doc_names, "text": texts})
    is_punct = np.isin(words, [".", "?", "!"])[types]
    words_t = pa.table(
        {
            "doc_id": common["doc_id"],
            "widx": common["idx"],
            "char_start": pa.array(start + lead, pa.int32()),
            "char_end": common["char_end"],
            "word": common["word"],
            "upos": common["upos"],
            "tag": common["tag"],
            "morph": common["morph"],
            "sent_start": pa.array(np.roll(is_punct, 1) | (idx == 0)),
            "space_after": pa.array(np.roll(lead, -1)),
        }
    )
    out = {}
    for run_id, variant, shift, data_tokens in (
        ("cyb-ap", "cyb-ap", 0.0, 0),
        ("cyb-dp", "cyb-dp", -0.6, 0),
    ):
        d, t, s = pauses(rng, types, tendency, noise, shift)
        p = (s * t).sum(1)
        tokens = pa.table(
            {
                **common,
                "dk": _lists(d),
                "t": _lists(t),
                "s": _lists(s),
                "expected_pauses": pa.array((s * np.arange(W)).sum(1)),
                "greedy_pauses": pa.array(
                    np.argmax(np.concatenate([d < 0.5, np.ones((n, 1), bool)], 1), 1).astype(
                        np.int32
                    )
                ),
                "pauses": pa.nulls(n, pa.int32()),
                "nll": pa.array(-np.log(p)),
                "correct": pa.array(rng.random(n) < p),
            }
        )
        steps = np.arange(1, 301)
        log = pa.table(
            {
                "step": pa.array(steps, pa.int32()),
                "tokens_seen": pa.array(steps * 4096, pa.int64()),
                "loss": 6 * np.exp(-steps / 80) + 2.5 + 0.3 * shift,
                "lr": np.full(300, 1e-3),
                "mean_expected_pauses": 1.2 - steps / 600,
                "elapsed_s": steps * 1.7,
            }
        )
        cfg = {
            "variant": variant,
            "w": W,
            "lr": 1e-3,
            "tokens": 300 * 4096,
            "data_tokens": data_tokens,
            "seed": 0,
        }
        run = {
            "run_id": run_id,
            "variant": variant,
            "recipe": "constant",
            "w_max": W,
            "params": {"cyb": {"w": W, "psi": 0.9, "variant": variant}, "config": cfg},
            "seed": 0,
            "train_tokens": 300 * 4096,
            "base": "data/base",
            "status": "complete",
        }
        t0 = time.perf_counter()
        out[run_id] = store.write_eval(
            db,
            run=run,
            eval_row={"run_id": run_id, "dataset": "synthetic", "mode": "dense"},
            tokens=tokens,
            docs=docs,
            words=words_t,
            train_log=log,
        )
        out[f"{run_id}_write_s"] = time.perf_counter() - t0
    out["n_tokens"] = n
    return out


def render_times(db: Path, compare: str) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    os.environ["CYB_DB"] = str(db)
    times = {}
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=900)
    started = False  # AppTest switches pages only after a first run (which shows Runs)
    for label, comparing in (("", False), ("_compare", True)):
        if comparing:
            at.multiselect(key="f_compare").set_value([compare])
        for page in PAGES:
            if started:
                at.switch_page(f"views/{page}.py")
            started = True
            for when in ("first", "cached"):
                t0 = time.perf_counter()
                at.run()
                times[f"{page}{label}_{when}_s"] = time.perf_counter() - t0
                if at.exception or at.error or at.warning:
                    problems = [e.message for e in at.exception] + [
                        e.value for e in (*at.error, *at.warning)
                    ]
                    raise SystemExit(f"{page}: {problems}")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tokens",
        type=int,
        default=1_000_000,
        help="token rows per evaluation (default: %(default)s)",
    )
    ap.add_argument(
        "--db", help="database to build (default: a temporary file, removed afterwards)"
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the temporary database and print its path"
    )
    args = ap.parse_args()
    tmp = None
    if args.db:
        db = Path(args.db)
        if db.exists():
            raise SystemExit(f"{db} exists; give a new path")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="cyb-bench-app-"))
        db = tmp / "bench.duckdb"
    try:
        t0 = time.perf_counter()
        built = build(db, args.tokens)
        print(f"tokens_per_eval: {built['n_tokens']}")
        print("evals: 2")
        print(f"build_db_s: {time.perf_counter() - t0:.2f}")
        print(f"db_mib: {db.stat().st_size / 2**20:.1f}")
        times = render_times(db, "cyb-dp")
        for k, v in times.items():
            print(f"{k}: {v:.3f}")
        cached = [v for k, v in times.items() if k.endswith("_cached_s")]
        print(f"max_cached_s: {max(cached):.3f}")
        print(f"max_first_s: {max(v for k, v in times.items() if k.endswith('_first_s')):.3f}")
        if tmp and args.keep:
            print(f"db: {db}")
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
