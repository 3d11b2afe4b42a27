"""`cyb tokenizer`: train the byte-level BPE tokenizer on the pretrain split."""

from __future__ import annotations

from pathlib import Path

from ..flags import DEFAULT, add_data_root, add_int, add_out

HELP = "train the byte-level BPE tokenizer"
DESCRIPTION = (
    "Train byte-level BPE (GPT-2 pre-tokenisation) on the pretrain split, with "
    "<|endoftext|>, <pad>, <dont_know> and <pause_1>..<pause_7> reserved as ids 0-9."
)


def register(subparsers) -> None:
    t = subparsers.add_parser("tokenizer", help=HELP, description=DESCRIPTION)
    add_data_root(t)
    add_int(t, "--vocab-size", 8192, "vocabulary size incl. special tokens")
    add_out(t, "output directory" + DEFAULT, default="data/tokenizer")
    t.set_defaults(func=run)


def run(args):
    from cyb_core import tokenizer as tok_lib
    from cyb_core.corpus import load_split

    texts = [d["text"] for d in load_split("pretrain", Path(args.data_root))]
    tok = tok_lib.train(texts, vocab_size=args.vocab_size)
    tok.save_pretrained(args.out)
    print(f"tokenizer with {len(tok)} tokens written to {args.out}")
