"""The streamed half of `cyb data import` for Hugging Face datasets (cyb_core.hf_datasets):
rows read a record batch at a time with pyarrow, pieces written a row at a time to the
gzipped JSONL splits, so memory stays flat in the corpus size.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .corpus import CorpusError

if TYPE_CHECKING:  # hf_datasets imports this module
    from .hf_datasets import Source

BATCH_ROWS = 512  # rows per record batch: the unit of memory
GZIP_LEVEL = 1  # streamed splits: fastest zlib level (3-7x faster than 6 here); still reproducible


# ----------------------------------------------------------------------------- reading


def _batches(path: Path, columns: list[str] | None = None) -> Iterator:
    """Record batches of a Parquet or Arrow (IPC stream or file) file, read one at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            # one row group at a time, read on demand: the default pre-buffering of
            # iter_batches reads ahead over every row group, so memory would grow with the file
            pf = pq.ParquetFile(path, pre_buffer=False)
            for i in range(pf.num_row_groups):
                yield from pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[i], columns=columns)
            return
        with pa.OSFile(str(path)) as f:  # read, not memory-mapped: pages are not kept resident
            try:
                reader = pa.ipc.open_stream(f)  # save_to_disk writes the stream format
            except pa.ArrowInvalid:
                f.seek(0)
                file_reader = pa.ipc.open_file(f)
                for i in range(file_reader.num_record_batches):
                    batch = file_reader.get_batch(i)
                    yield batch.select(columns) if columns else batch
                return
            for batch in reader:
                yield batch.select(columns) if columns else batch
    except (pa.ArrowInvalid, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CorpusError(
            f"{path} cannot be read as {path.suffix[1:]} ({first}): the file is damaged or "
            "not of that format"
        ) from None


def _schema(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        try:
            return pq.ParquetFile(path).schema_arrow
        except (pa.ArrowInvalid, OSError) as e:
            raise CorpusError(
                f"{path} cannot be read as parquet ({str(e).splitlines()[0]}): the file is "
                "damaged or not Parquet"
            ) from None
    for batch in _batches(path):
        return batch.schema
    raise CorpusError(f"{path} holds no rows: add some or leave it out")


def check_field(source: Source, text_field: str) -> None:
    """CorpusError unless every file of `source` has `text_field` as a string column."""
    import pyarrow as pa

    for f in source.files:
        schema = _schema(f)
        strings = [n for n in schema.names if pa.types.is_string(schema.field(n).type)] + [
            n for n in schema.names if pa.types.is_large_string(schema.field(n).type)
        ]
        if text_field not in schema.names:
            have = f"string columns: {', '.join(strings)}" if strings else "no string columns"
            raise CorpusError(f"{f} has no column {text_field!r} ({have}): pass --text-field NAME")
        if text_field not in strings:
            raise CorpusError(
                f"{f}: column {text_field!r} is {schema.field(text_field).type}, not text: "
                "pass --text-field with a string column"
            )


def documents(source: Source, text_field: str, stats: dict) -> Iterator[dict]:
    """Documents of `source` one at a time; empty or null texts are counted in stats["skipped"]."""
    row = 0
    for f in source.files:
        for batch in _batches(f, [text_field]):
            for text in batch.column(0).to_pylist():
                row += 1
                if text is None or not text.strip():
                    stats["skipped"] += 1
                    continue
                stats["docs"] += 1
                stats["chars"] += len(text)
                doc_id = f"{source.label}:{row - 1}"
                yield {"doc_id": doc_id, "source": "import", "title": source.label, "text": text}
    stats["rows"] = row


# ----------------------------------------------------------------------------- writing


def piece_split(doc_id: str, seed: int, heldout: float, pretrain: float) -> str:
    """heldout / pretrain / finetune for one piece: a uniform draw seeded by (seed, id)."""
    h = hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "big") / 2**64
    return "heldout" if u < heldout else "pretrain" if u < heldout + pretrain else "finetune"


class _HashingFile:
    """A binary file that hashes and counts what is written to it."""

    def __init__(self, path: Path):
        self.f, self.sha, self.n = open(path, "wb"), hashlib.sha256(), 0

    def write(self, b) -> int:
        self.sha.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class SplitWriter:
    """NAME.jsonl.gz written a row at a time (the same layout write_splits writes)."""

    def __init__(self, folder: Path, name: str):
        self.raw = _HashingFile(folder / f"{name}.jsonl.gz")
        self.gz = gzip.GzipFile(
            filename=f"{name}.jsonl", mode="wb", fileobj=self.raw, compresslevel=GZIP_LEVEL, mtime=0
        )
        self.docs = self.chars = 0

    def write(self, row: dict) -> None:
        self.gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        self.docs += 1
        self.chars += len(row["text"])

    def close(self) -> dict:
        self.gz.close()
        self.raw.close()
        return {
            "sha256": self.raw.sha.hexdigest(),
            "bytes": self.raw.n,
            "docs": self.docs,
            "text_chars": self.chars,
            "text_mb": round(self.chars / 1e6, 3),
        }
