"""`cyb data import` of a Parquet corpus: peak memory against corpus size, side by side in one run.

Writes two Parquet corpora of random-paragraph documents (default 0.25 GB and 1.1 GB of text) in
a temporary folder, imports each with `cyb data import FILE --out DIR` in a fresh process and
prints, per size: text GB, documents, pieces written, wall seconds and that process's peak
resident memory (ru_maxrss); then the ratio of the two peaks next to the ratio of the sizes.
Streaming keeps the peak flat (ratio near 1) while the corpus grows several-fold.
Run: `python benchmarks/bench_import.py [--sizes 0.25 1.1]` (needs about 2x the largest size
free in the temporary folder; --tmp chooses it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
DOC_PARAS = 40  # paragraphs per document (~20 kB)
ROWS_PER_GROUP = 1000

CHILD = """
import resource, sys
from cyb.cli import main
code = main(sys.argv[1:])
print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(code)
"""


def write_corpus(path: Path, gb: float, seed: int = 0) -> tuple[int, int]:
    """A Parquet file of documents made of random paragraphs; returns (documents, characters)."""
    rng = np.random.default_rng(seed)
    words = np.array(
        ["".join(rng.choice(list("etaoinshrdlu"), rng.integers(2, 9))) for _ in range(4000)]
    )
    pool = [" ".join(rng.choice(words, rng.integers(60, 110))) + "." for _ in range(3000)]
    target, chars, docs = int(gb * 1e9), 0, 0
    schema = pa.schema([("text", pa.string()), ("id", pa.int64())])
    with pq.ParquetWriter(path, schema) as w:
        while chars < target:
            picks = rng.integers(0, len(pool), (ROWS_PER_GROUP, DOC_PARAS))
            texts = ["\n\n".join(pool[i] for i in row) for row in picks]
            chars += sum(map(len, texts))
            w.write_table(pa.table({"text": texts, "id": np.arange(docs, docs + len(texts))}))
            docs += len(texts)
    return docs, chars


def import_once(src: Path, out: Path) -> dict:
    argv = ["data", "import", str(src), "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, cwd=ROOT
    )
    secs = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"import failed: {done.stderr.strip()}")
    rss = int(done.stdout.split("maxrss_kb")[1].split()[0])
    files = json.loads((out / "IMPORT.json").read_text())["files"]
    return {"secs": secs, "rss_mb": rss / 1024, "pieces": sum(f["docs"] for f in files.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs=2, default=[0.25, 1.1], help="GB of text")
    ap.add_argument("--tmp", help="where the corpora go (default: the system temporary folder)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for gb in args.sizes:
            src = Path(tmp) / f"corpus-{gb}.parquet"
            docs, chars = write_corpus(src, gb)
            res = import_once(src, Path(tmp) / f"out-{gb}")
            rows.append(
                {"gb": chars / 1e9, "docs": docs, "parquet_mb": src.stat().st_size / 1e6, **res}
            )
            src.unlink()  # keep the disk use to one corpus at a time
    print(
        f"{'text GB':>8} {'docs':>8} {'parquet MB':>10} {'pieces':>8} {'seconds':>8} {'peak RSS MB':>12}"
    )
    for r in rows:
        print(
            f"{r['gb']:8.3f} {r['docs']:8d} {r['parquet_mb']:10.0f} {r['pieces']:8d} "
            f"{r['secs']:8.1f} {r['rss_mb']:12.0f}"
        )
    small, large = rows
    print(f"corpus size ratio: {large['gb'] / small['gb']:.2f}x")
    print(f"peak RSS ratio: {large['rss_mb'] / small['rss_mb']:.2f}x")
    print(f"throughput: {large['gb'] * 1e3 / large['secs']:.1f} MB of text per second")


if __name__ == "__main__":
    main()
