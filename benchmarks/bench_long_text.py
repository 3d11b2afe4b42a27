"""Long-text benchmark: `cyb eval` of one book-length single-line text against the held-out split.

Prints, side by side, for the held-out split and for single-document texts of --sizes characters
(default one of 2,000,000: a 2 MB book on one line, built from the held-out text itself):
tokens, seconds (evaluation + spaCy + tables + the database write), tokens/s, the ratio of the
held-out tokens/s to the text's (target <= 1.5), and memory: the peak RSS of the process, the RSS
before the evaluation started (torch, spaCy and the model loaded) and the difference, the memory
the evaluation itself took. Each case runs in its own process so that each peak is its own.
The model is --checkpoint (default data/base, set to --w 4 steps per token and the cyb-ap variant
so the pauses cost what they do in a real run; saved once to a scratch folder).
Run: `python benchmarks/bench_long_text.py --help`; a quick look: `--sizes 200000 --heldout-docs 2:20`.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _scratch(prefix: str) -> Path:
    """A temporary folder removed when this process exits."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, d, True)
    return d


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def single_line_text(size: int, root: Path) -> str:
    """`size` characters of held-out prose on one line (whitespace runs become one space)."""
    from cyb_core.corpus import load_split

    text = " ".join(" ".join(d["text"].split()) for d in load_split("heldout", root))
    return (" ".join([text] * (size // max(len(text), 1) + 1)))[:size]


def run_case(args) -> dict:
    """One evaluation in this process: {tokens, seconds, peak_mb, before_mb}."""
    from analysis import pos
    from analysis.evaluation import run_eval
    from cyb_core import model as model_lib

    nlp = pos.load_nlp()
    model_lib.load(args.checkpoint)  # imports and first-load costs outside the timing
    tmp = _scratch("cyb-bench-long-")
    kw: dict = {}
    if args.case == "heldout":
        root = Path(args.data_root)
        if args.heldout_docs:  # a slice of the split, as a corpus folder of its own
            from cyb_core.corpus import load_split

            a, _, b = args.heldout_docs.partition(":")
            docs = load_split("heldout", root)[int(a or 0) : int(b) if b else None]
            root = tmp / "corpus"
            root.mkdir()
            with gzip.open(root / "heldout.jsonl.gz", "wt", encoding="utf-8") as f:
                f.writelines(
                    json.dumps({"doc_id": d["doc_id"], "text": d["text"]}) + "\n" for d in docs
                )
        kw = {"split": "heldout", "root": root}
    else:
        text = tmp / "book.txt"
        text.write_text(single_line_text(int(args.case), Path(args.data_root)))
        kw = {"text": text}
    before = _rss_mb()
    t = time.perf_counter()
    s = run_eval(
        args.checkpoint,
        db=tmp / "bench.duckdb",
        run_id="bench",
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        progress=False,
        nlp=nlp,
        **kw,
    )
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"tokens": s["n_tokens"], "seconds": seconds, "peak_mb": peak, "before_mb": before}


def prepare_checkpoint(src: str, w: int) -> str:
    from cyb_core import model as model_lib

    out = _scratch("cyb-bench-ckpt-") / f"w{w}"
    model_lib.load(src).with_settings(w=w, variant="cyb-ap" if w > 1 else "baseline").save(out)
    return str(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "data" / "base"), help="model to evaluate")
    p.add_argument("--w", type=int, default=4, help="steps per token to evaluate with (default 4)")
    p.add_argument("--data-root", default=str(ROOT / "data" / "corpus"), help="corpus folder")
    p.add_argument(
        "--sizes",
        default="2000000",
        help="comma-separated characters of the single-line texts (default: 2000000)",
    )
    p.add_argument(
        "--heldout-docs",
        help="held-out: only this slice of its documents, e.g. 2:40 (default: all 54; the first two "
        "are books of 433k and 320k characters)",
    )
    p.add_argument("--seq-len", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per pass (default 16)")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, in a child process
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_case(args)))
        return
    ckpt = prepare_checkpoint(args.checkpoint, args.w)
    cases = ["heldout", *args.sizes.split(",")]
    rows = {}
    for case in cases:
        cmd = [sys.executable, __file__, "--case", case, "--checkpoint", ckpt]
        cmd += ["--data-root", args.data_root, "--seq-len", str(args.seq_len)]
        cmd += ["--batch-size", str(args.batch_size)]
        cmd += ["--heldout-docs", args.heldout_docs] if args.heldout_docs else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        rows[case] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"done: {case}", file=sys.stderr, flush=True)
    held = rows["heldout"]["tokens"] / rows["heldout"]["seconds"]
    print(f"checkpoint: {args.checkpoint} at W={args.w}; seq_len {args.seq_len}")
    print(
        f"{'case':>22} {'tokens':>9} {'seconds':>8} {'tokens/s':>9} {'held-out/this':>13} "
        f"{'peak MB':>8} {'before MB':>9} {'eval MB':>8}"
    )
    for case, r in rows.items():
        rate = r["tokens"] / r["seconds"]
        name = "held-out split" if case == "heldout" else f"one line, {int(case):,} chars"
        print(
            f"{name:>22} {r['tokens']:>9,} {r['seconds']:>8.1f} {rate:>9.0f} {held / rate:>13.2f} "
            f"{r['peak_mb']:>8.0f} {r['before_mb']:>9.0f} {r['peak_mb'] - r['before_mb']:>8.0f}"
        )


if __name__ == "__main__":
    main()
