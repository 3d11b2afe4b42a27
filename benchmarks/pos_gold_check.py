"""Check the spaCy alignment against the Brown corpus gold tags of the held-out Brown files.

The check itself is analysis.brown_check.brown_agreement (see its docstring for what is
compared); this prints its counts, the agreement per Penn Treebank tag and the most frequent
disagreements, or all of it as JSON.
Run: python benchmarks/pos_gold_check.py [--root data/corpus] [--max-docs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from analysis.brown_check import brown_agreement  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python benchmarks/pos_gold_check.py", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--root",
        default="data/corpus",
        help="corpus directory with heldout and heldout_brown_pos (default: %(default)s)",
    )
    ap.add_argument(
        "--tokenizer", default="data/tokenizer", help="tokenizer directory (default: %(default)s)"
    )
    ap.add_argument("--max-docs", type=int, help="only the first N Brown documents")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    r = brown_agreement(args.root, args.tokenizer, max_docs=args.max_docs, progress=not args.json)
    if args.json:
        out = {
            k: (v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v)
            for k, v in r.items()
        }
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{r['docs']} Brown documents, {r['model_tokens']} model tokens; {r['spacy_word_initial']} start a spaCy "
        f"word, {r['both_word_initial']} of them also a gold word (boundary agreement {r['boundary_agreement']:.1%})"
    )
    print(
        f"{r['different_extent']} left out: spaCy and Brown cut the word differently ($1,500, 50%, 2-year-old)"
    )
    print(
        f"fine-tag agreement on {r['compared']} word-initial tokens with a shared tag: {r['agreement']:.1%} "
        f"({r['agreement_strict']:.1%} if title words tagged NNP/NNPS count as wrong)\n"
    )
    print(r["per_tag"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nmost frequent disagreements (gold -> spaCy):")
    print(r["confusions"].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
