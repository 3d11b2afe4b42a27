"""Byte-level BPE tokenizer with the CYB special tokens reserved from the start.

GPT-2 pre-tokenisation splits "wasn't" into "wasn" + "'t", as in the paper's
examples. The special tokens take the first ids, so every checkpoint trained
with this tokenizer agrees on where `<dont_know>` and the pauses live.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOT = "<|endoftext|>"
PAD = "<pad>"
DK = "<dont_know>"
MAX_PAUSES = 7
PAUSES = [f"<pause_{k}>" for k in range(1, MAX_PAUSES + 1)]
SPECIAL_TOKENS = [EOT, PAD, DK, *PAUSES]

DEFAULT_DIR = Path("data/tokenizer")


def train(texts: Iterable[str], vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts`; special tokens get ids 0..len(SPECIAL_TOKENS)-1."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(texts)
    tok.train_from_iterator([*texts, *_bare_contractions(texts)], trainer=trainer)
    return wrap(tok)


def _bare_contractions(texts: list[str]) -> list[str]:
    """Every "Xn't" of the corpus once more without its leading space, as often as it occurs.

    In a few MB of prose the stems mostly follow a space, so BPE would learn "Ġwasn" but
    split a bare "wasn't" (after a quote or a line break) into "was" + "n" + "'t".
    Larger corpora learn both forms; this gives ours the same, "wasn" + "'t".
    """
    counts: dict[str, int] = {}
    for text in texts:
        for stem in _CONTRACTION.findall(text):
            counts[stem] = counts.get(stem, 0) + 1
    return [f"\n{stem}n't" * n for stem, n in sorted(counts.items())]


_CONTRACTION = re.compile(r"\b([A-Za-z]+)n't\b")


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOT,
        bos_token=EOT,
        unk_token=None,
        pad_token=PAD,
        additional_special_tokens=[DK, *PAUSES],
        clean_up_tokenization_spaces=False,
    )


def load(path: str | Path = DEFAULT_DIR) -> PreTrainedTokenizerFast:
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer at {path}: run `cyb tokenizer` (needs the corpus from `cyb data build`)"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(path), trust_remote_code=False)


def ensure_special_tokens(tokenizer) -> int:
    """Add `<dont_know>` and the pause tokens to any tokenizer that lacks them.

    Returns how many tokens were added (the caller resizes the embeddings).
    """
    missing = [t for t in [DK, *PAUSES] if t not in tokenizer.get_vocab()]
    added = tokenizer.add_special_tokens({"additional_special_tokens": missing}) if missing else 0
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": PAD})
    return added


def special_ids(tokenizer) -> dict:
    """Ids of the CYB tokens: {'dk': int, 'pauses': [7 ints], 'eot': int, 'pad': int}."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "dk": ids(DK),
        "pauses": [ids(p) for p in PAUSES],
        "eot": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
    }


def bos_ids(tokenizer) -> list[int]:
    """The ids the tokenizer itself puts before every text: its BOS, as `tokenizer(text)` adds it.

    Read off the tokenizer's own post-processing (Llama and Gemma tokenizers prepend `<s>` /
    `<bos>`, GPT-2 and Qwen2 nothing), so a model is trained, evaluated and prompted with the
    same prefix. Ours prepends nothing (its `bos_token` is only a name for end-of-text).
    """
    probe = "a"
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    for i in range(len(full) - len(bare) + 1):  # the text's ids sit after the prefix
        if full[i : i + len(bare)] == bare:
            return list(full[:i])
    return []


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids of each text with the tokenizer's BOS prefix (bos_ids) and no end-of-text."""
    bos = bos_ids(tokenizer)
    return [[*bos, *ids] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
