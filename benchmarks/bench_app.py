"""Render time of every app page over a large synthetic store.

Builds a database with two W = 4 runs evaluated on the same 1,000,000 tokens (bulk insert
through analysis.store.write_eval: Parquet shards loaded in one transaction), with
Zipf-distributed token types, a part of speech per type, per-type pause tendencies and
per-token noise, d_i -> s_i -> E[S] as the model computes them, t_i rising with the pauses
where d_i was high (so calibration is positive) and a training log per run. Then renders each
page with streamlit's AppTest: the first render (queries run) and a re-render (cached), once
with the run alone and once compared with the other run. Prints `name: value` lines.

Then the Playground (`playground_times`): for each shipped checkpoint (data/base, the
shipped-size model, W = 1; the same weights saved with W = 4, so every token has three pauses
to score; data/base-mixed, W = 4), after the model is loaded, ~200 typed tokens scored and
drawn (analysis.playground.score + view, token_html and the histogram), the same through the
page (an AppTest rerun after typing the text), and generation's first token and tokens/s.
Target: under 1 s for each. `--playground-only` skips the large store.

    .venv/bin/python benchmarks/bench_app.py [--tokens 1000000] [--db PATH] [--keep]
        [--writes-only] [--playground-only] [--pages-on PATH]

Before the pages: each write's time and memory growth (with --writes-only also at half of
--tokens, to show writing linear in size and memory flat in it).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import threading
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
    out = {"n_tokens": n}
    for run_id, variant, shift in (("cyb-ap", "cyb-ap", 0.0), ("cyb-dp", "cyb-dp", -0.6)):
        d, t, s = pauses(rng, types, tendency, noise, shift)
        tokens = _token_table(rng, common, d, t, s)
        del d, t, s
        with PeakRss() as mem:
            t0 = time.perf_counter()
            out[run_id] = store.write_eval(
                db,
                run=_run_row(run_id, variant),
                eval_row={"run_id": run_id, "dataset": "synthetic", "mode": "dense"},
                tokens=tokens,
                docs=docs,
                words=words_t,
                train_log=_train_log(shift),
            )
            out[f"{run_id}_write_s"] = time.perf_counter() - t0
        out[f"{run_id}_write_rss_growth_mib"] = mem.growth / 2**20
    return out


def _token_table(rng, common: dict, d, t, s) -> pa.Table:
    n = len(d)
    p = (s * t).sum(1)
    return pa.table(
        {
            **common,
            "dk": _lists(d),
            "t": _lists(t),
            "s": _lists(s),
            "expected_pauses": pa.array((s * np.arange(W)).sum(1)),
            "greedy_pauses": pa.array(
                np.argmax(np.concatenate([d < 0.5, np.ones((n, 1), bool)], 1), 1).astype(np.int32)
            ),
            "pauses": pa.nulls(n, pa.int32()),
            "nll": pa.array(-np.log(p)),
            "correct": pa.array(rng.random(n) < p),
            "token_class": pa.array(np.full(n, "natural")),  # natural text, as most evaluations
        }
    )


def _train_log(shift: float) -> pa.Table:
    steps = np.arange(1, 301)
    return pa.table(
        {
            "step": pa.array(steps, pa.int32()),
            "tokens_seen": pa.array(steps * 4096, pa.int64()),
            "loss": 6 * np.exp(-steps / 80) + 2.5 + 0.3 * shift,
            "lr": np.full(300, 1e-3),
            "mean_expected_pauses": 1.2 - steps / 600,
            "elapsed_s": steps * 1.7,
        }
    )


def _run_row(run_id: str, variant: str) -> dict:
    cfg = {
        "variant": variant,
        "w": W,
        "lr": 1e-3,
        "tokens": 300 * 4096,
        "data_tokens": 0,
        "seed": 0,
    }
    return {
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


def _rss() -> int:
    """This process's resident memory in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The largest growth of resident memory over a block, sampled every 20 ms in a thread."""

    def __enter__(self):
        self.start, self.peak, self._stop = _rss(), _rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.growth = max(self.peak, _rss()) - self.start


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


def typed_text(n_tokens: int = 200) -> str:
    """The first `n_tokens` tokens of the fixture's held-out text, as a user would paste it."""
    from cyb_core import tokenizer as tok_lib
    from cyb_core.corpus import load_split

    text = load_split("heldout", ROOT / "data" / "fixture")[0]["text"]
    enc = tok_lib.load(ROOT / "data" / "tokenizer")(text[:5000], return_offsets_mapping=True)
    return text[: enc["offset_mapping"][n_tokens - 1][1]]


TRIES = 5  # the Playground's times: the fastest of this many (the machine may be shared)


class Clock:
    """Wall time and this process's CPU time (all its threads) of a block. On a machine shared
    with other work the wall time grows with the load; the CPU time barely does, and with two
    torch threads it is at most about twice the wall time the block takes on an idle machine."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _keep_best(out: dict, key: str, clock: Clock) -> None:
    """The fastest of several tries, as `key` (wall) and `key` with _cpu_s (CPU)."""
    if clock.wall < out.get(f"{key}_s", float("inf")):
        out[f"{key}_s"], out[f"{key}_cpu_s"] = clock.wall, clock.cpu


def _direct(out: dict, ckpts: dict, texts, prompt: str, device: str) -> None:
    """Load, score and draw, and generate through analysis.playground, without Streamlit."""
    from analysis import playground as pg
    from app import charts, token_html

    for name, path in ckpts.items():
        with Clock() as c:
            loaded = pg.load(path, device)
        out[f"playground_{name}_load_s"] = c.wall
        for _ in range(TRIES):
            with Clock() as c:
                scored = pg.score(loaded, next(texts))
                rows, hist = pg.view([scored])
                token_html.text_html(rows[0], scored.w)
                charts.pause_histogram(hist.assign(run="A"), height=280).to_json()
            _keep_best(out, f"playground_{name}_score_draw", c)
        out[f"playground_{name}_tokens"] = len(rows[0])
        for recipe in ("constant", "variable"):
            for _ in range(TRIES):
                with Clock() as c:
                    tokens = pg.generate(loaded, prompt, recipe=recipe, max_new_tokens=32)
                    next(tokens)
                _keep_best(out, f"playground_{name}_{recipe}_first_token", c)
            t0 = time.perf_counter()
            n = 1 + sum(1 for _ in tokens)
            out[f"playground_{name}_{recipe}_tokens_per_s"] = n / (time.perf_counter() - t0)


def playground_times(tmp: Path, device: str = "cpu") -> dict[str, float]:
    """Scoring, drawing and generation times of the Playground per shipped checkpoint."""
    from streamlit.testing.v1 import AppTest

    from analysis import pos
    from cyb_core import model as model_lib

    w4 = tmp / "base-w4"  # the shipped-size model with W = 4: pauses to score after every token
    model_lib.load(ROOT / "data" / "base", w=4, variant="cyb-ap").save(w4)
    ckpts = {
        "base": ROOT / "data" / "base",
        "base_w4": w4,
        "base_mixed": ROOT / "data" / "base-mixed",
    }
    text = typed_text(200)
    # a prompt as typed in the page: Recipe 2 reads a prompt one position per forward call
    # (its pauses included), so its first token waits for the whole prompt
    prompt = " ".join(text.split()[:8])
    import torch

    out = {
        "playground_prompt_chars": len(prompt),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg()[0],
    }
    pos.load_nlp()  # loaded once per process, with the first model (app.data.model)
    texts = (f"{text} {i}" for i in itertools.count())  # a new text each time: nothing cached
    # In a worker thread, as Streamlit runs a page: on a busy 2-core machine torch called from
    # the main thread spent up to ten times the CPU time on the same scoring (its two threads
    # waiting on each other), which no user of the app sees.
    failed = []
    worker = threading.Thread(
        target=lambda: _run_catching(failed, _direct, out, ckpts, texts, prompt, device)
    )
    worker.start()
    worker.join()
    if failed:
        raise SystemExit(f"playground: {failed[0]!r}")

    db = tmp / "small.duckdb"  # the page needs an evaluation to open on
    build(db, DOC_TOKENS)
    os.environ["CYB_DB"] = str(db)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=900).run()
    at.switch_page("views/playground.py").run()
    for name, path in ckpts.items():
        at.selectbox(key="pg_run_A").set_value("<path>").run()
        at.text_input(key="pg_path_A").set_value(str(path)).run()  # loads the model
        for _ in range(TRIES):
            at.text_area(key="pg_text").set_value(next(texts))
            with Clock() as c:
                at.run()
            if at.exception or at.error:
                raise SystemExit(f"playground: {[e.value for e in (*at.exception, *at.error)]}")
            _keep_best(out, f"playground_{name}_page_rerun", c)
    out["load_average_end"] = os.getloadavg()[0]
    return out


def _run_catching(failed: list, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as e:  # re-raised by the main thread
        failed.append(e)


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
    ap.add_argument(
        "--writes-only",
        action="store_true",
        help="only the writes, at half and all of --tokens (time linear, memory flat?), and the "
        "size; no pages",
    )
    ap.add_argument(
        "--pages-on",
        metavar="DB",
        help="only the pages, over a store this script built before (--db PATH or --keep)",
    )
    ap.add_argument(
        "--playground-only",
        action="store_true",
        help="only the Playground's times (no large store)",
    )
    args = ap.parse_args()
    if args.pages_on:
        if not Path(args.pages_on).is_file():
            raise SystemExit(f"no database at {args.pages_on}; build one with --db PATH")
        _print_pages(render_times(Path(args.pages_on), "cyb-dp"))
        return
    if args.playground_only:
        with tempfile.TemporaryDirectory(prefix="cyb-bench-playground-") as tmp:
            _print_playground(playground_times(Path(tmp)))
        return
    tmp = None
    if args.db:
        db = Path(args.db)
        if db.exists():
            raise SystemExit(f"{db} exists; give a new path")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="cyb-bench-app-"))
        db = tmp / "bench.duckdb"
    try:
        small = None
        if args.writes_only:  # the half-size store: what shows writing linear and memory flat
            with tempfile.TemporaryDirectory(prefix="cyb-bench-half-") as half:
                small = build(Path(half) / "half.duckdb", args.tokens // 2)
        t0 = time.perf_counter()
        built = build(db, args.tokens)
        print(f"tokens_per_eval: {built['n_tokens']}")
        print("evals: 2")
        print(f"build_db_s: {time.perf_counter() - t0:.2f}")
        _print_writes(small, built)
        print(f"db_mib: {db.stat().st_size / 2**20:.1f}")
        print(f"bytes_per_token: {db.stat().st_size / (2 * built['n_tokens']):.1f} (target <= 70)")
        if args.writes_only:
            return
        _print_pages(render_times(db, "cyb-dp"))
        with tempfile.TemporaryDirectory(prefix="cyb-bench-playground-") as ptmp:
            _print_playground(playground_times(Path(ptmp)))
        if tmp and args.keep:
            print(f"db: {db}")
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _print_pages(times: dict[str, float]) -> None:
    for k, v in times.items():
        print(f"{k}: {v:.3f}")
    cached = [v for k, v in times.items() if k.endswith("_cached_s")]
    print(f"max_cached_s: {max(cached):.3f}")
    print(f"max_first_s: {max(v for k, v in times.items() if k.endswith('_first_s')):.3f}")


def _print_writes(small: dict | None, built: dict) -> None:
    """Write time and memory growth of each evaluation at two sizes: linear time shows as a
    ratio near the ratio of the sizes, flat memory as a memory ratio near 1."""
    for out in (small, built) if small else (built,):
        n = out["n_tokens"]
        for run in ("cyb-ap", "cyb-dp"):  # cyb-dp: the second evaluation of the same text
            print(f"{run}_write_s_at_{n}: {out[f'{run}_write_s']:.2f}")
            print(f"{run}_write_rss_growth_mib_at_{n}: {out[f'{run}_write_rss_growth_mib']:.0f}")
    if small is None:
        return
    size = built["n_tokens"] / small["n_tokens"]
    for what in ("write_s", "write_rss_growth_mib"):
        ratio = built[f"cyb-ap_{what}"] / small[f"cyb-ap_{what}"]
        print(f"{what}_ratio: {ratio:.2f} for {size:.1f}x the rows")


def _print_playground(times: dict) -> None:
    for k, v in times.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    for what in ("score_draw", "page_rerun", "first_token"):
        for clock in ("", "_cpu"):
            v = max(x for k, x in times.items() if k.endswith(f"_{what}{clock}_s"))
            print(f"playground_max_{what}{clock}_s: {v:.3f} (target 1 s; {v:.0%} of it)")


if __name__ == "__main__":
    main()
