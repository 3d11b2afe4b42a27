"""Token streams and "concatenate then split" packing of the corpus splits into training blocks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .corpus import load_split
from .tokenizer import encode


def token_stream(texts: list[str], tokenizer) -> torch.Tensor:
    """All texts tokenised and concatenated, each followed by end-of-text: (N,) long.

    Each text starts with the tokenizer's own BOS (tokenizer.encode; none for ours)."""
    eot = tokenizer.eos_token_id
    ids: list[int] = []
    for enc in encode(tokenizer, texts):
        ids.extend(enc)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def pack(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Cut a stream into blocks of seq_len + 1 tokens (inputs and shifted targets): (N, seq_len+1).

    Blocks do not overlap, so every real token is trained on once per epoch; the tail
    that does not fill a block is dropped.
    """
    n = len(stream) // (seq_len + 1)
    if n == 0:
        raise ValueError(
            f"text too short: {len(stream)} tokens cannot fill one block of {seq_len + 1}"
        )
    return stream[: n * (seq_len + 1)].view(n, seq_len + 1)


def split_blocks(split: str, tokenizer, seq_len: int, root: str | Path) -> torch.Tensor:
    """Packed blocks of a corpus split (pretrain, finetune or heldout)."""
    global _LAST
    texts = [d["text"] for d in load_split(split, Path(root))]
    key = _stream_key(texts, tokenizer)
    if key is not None and _LAST is not None and _LAST[0] == key:
        stream = _LAST[1]
    else:
        stream = token_stream(texts, tokenizer)
        _LAST = None if key is None else (key, stream)
    return pack(stream.clone(), seq_len)  # a copy: the kept stream stays as tokenised


# The last split tokenised in this process, keyed by its texts and the tokenizer: an
# experiment trains many runs on one split, and tokenising it again costs seconds per run.
_LAST: tuple[tuple[str, str], torch.Tensor] | None = None


def _stream_key(texts: list[str], tokenizer) -> tuple[str, str] | None:
    """(texts digest, tokenizer digest), or None for a tokenizer without a serialisable
    backend (a slow tokenizer), which is never cached."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    # the backend's JSON holds the vocabulary, merges, normaliser and post-processor (its BOS)
    tok = hashlib.sha256(
        f"{type(tokenizer).__name__}|{tokenizer.eos_token_id}|{backend.to_str()}".encode()
    )
    return h.hexdigest(), tok.hexdigest()


class BlockSampler:
    """Deterministic batches: epoch e visits the blocks in a permutation seeded by (seed, e).

    The batch for optimiser step k depends only on (seed, k), so a resumed run sees
    exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, blocks: torch.Tensor, batch_size: int, seed: int):
        if len(blocks) < batch_size:
            raise ValueError(
                f"only {len(blocks)} blocks of data for a batch of {batch_size}: lower --batch-size or --seq-len"
            )
        self.blocks, self.batch_size, self.seed = blocks, batch_size, seed
        self.per_epoch = len(blocks) // batch_size
        self._perm_epoch, self._perm = -1, None

    def batch(self, k: int) -> torch.Tensor:
        epoch, i = divmod(k, self.per_epoch)
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm, self._perm_epoch = (
                torch.from_numpy(rng.permutation(len(self.blocks))),
                epoch,
            )
        return self.blocks[self._perm[i * self.batch_size : (i + 1) * self.batch_size]]
