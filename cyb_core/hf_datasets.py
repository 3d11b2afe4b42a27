"""`cyb data import` of Hugging Face `datasets` data: streamed, in memory flat in corpus size.

A source is a `save_to_disk` folder (a Dataset: state.json; a DatasetDict: dataset_dict.json),
a Parquet or Arrow file, a folder of them, or a dataset id ("org/name") in the local Hugging
Face hub cache (fetched only with `download=True`, never when HF_HUB_OFFLINE is set). Rows are
read a record batch at a time with pyarrow (Arrow files are read, not memory-mapped, so the
resident memory does not grow with the file), the `text_field` of each row is one document, cut
into pieces as `cyb data import` cuts a .txt file (corpus.chunk), and each piece is dealt to
heldout / pretrain / finetune by a seeded hash of its id and written at once to the gzipped
JSONL split. Only counts and checksums are kept; OUT is swapped in whole at the end
(atomic_save_dir), so a failure part-way leaves the previous OUT as it was.

    manifest = import_datasets(["my-ds"], Path("my-corpus"), text_field="text", split="train")
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .atomic import atomic_save_dir
from .corpus import IMPORT_MANIFEST, check_import_out, chunk
from .corpus_sources import CorpusError
from .names import HUB_ID

DATA_SUFFIXES = (".parquet", ".arrow")
HUB_PATTERNS = ["*.parquet", "*.arrow", "*.json", "*.md"]  # what --download fetches
BATCH_ROWS = 512  # rows per record batch: the unit of memory
GZIP_LEVEL = 1  # streamed splits: fastest zlib level (3-7x faster than 6 here); still reproducible
STREAM_RULE = (
    "each row's text field is one document, cut at blank lines into pieces of ~2000-4000 "
    "characters; a piece goes to heldout, pretrain or finetune by a seeded hash of its id "
    "(`piece_split`), so the split depends on the text, the ids and the seed, not on the order; "
    "rows whose text is empty or null are skipped and counted"
)


@dataclass
class Source:
    """One dataset input: `files` read in order, as the documents of `label`."""

    label: str  # the id prefix of its documents, e.g. "wiki/train"
    kind: str  # "save_to_disk", "parquet", "arrow", "hub"
    files: list[Path]
    split: str | None = None
    rows_hint: int | None = None  # for the progress bar, when the metadata says
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- finding sources


def _hub_id(name: str) -> bool:
    return bool(re.fullmatch(HUB_ID, name)) and ".." not in name


def is_dataset_source(src: str, download: bool = False) -> bool:
    """Whether `src` is read here (a datasets folder, a Parquet/Arrow file or a folder of them,
    a cached hub dataset) rather than by the .txt/.jsonl importer."""
    path = Path(src)
    if src == "-":
        return False
    if path.is_file():
        return path.suffix in DATA_SUFFIXES
    if path.is_dir():
        if any((path / n).is_file() for n in ("state.json", "dataset_dict.json")):
            return True
        files = [f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")]
        return bool(files) and all(f.suffix in DATA_SUFFIXES for f in files)
    return _hub_id(src) and (download or hub_snapshot(src) is not None)


def hub_id_missing(sources: list[str]) -> str | None:
    """The error for a source that is neither a path nor a cached dataset but could be a hub id."""
    for src in sources:
        if src != "-" and not Path(src).exists() and _hub_id(src):
            return (
                f"{src}: no such file or folder, and no dataset {src!r} in the local Hugging "
                "Face cache: check the path, or pass --download to fetch the dataset"
            )
    return None


def hub_snapshot(repo_id: str) -> Path | None:
    """The dataset's snapshot folder in the local hub cache, or None; never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or a malformed cache entry
        return None


def _fetch(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download

    if constants.is_offline_mode():
        raise CorpusError(
            f"dataset {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
            f"set: unset it to let --download fetch it, or `hf download {repo_id} --repo-type "
            "dataset` where the hub is reachable"
        )
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=HUB_PATTERNS))
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CorpusError(f"cannot fetch dataset {repo_id!r} ({first}): check the id") from None


def _pick_split(names: list[str], split: str | None, where: str) -> str:
    """The split to read: --split, else "train" if present, else the only one."""
    if split is not None:
        if split not in names:
            raise CorpusError(
                f"{where} has no split {split!r}: pass --split with one of {', '.join(names)}"
            )
        return split
    if "train" in names or len(names) == 1:
        return "train" if "train" in names else names[0]
    raise CorpusError(f"{where} has splits {', '.join(names)}: pass --split NAME")


def _disk_dataset(folder: Path, label: str, split: str | None) -> Source:
    """A save_to_disk folder: a Dataset (state.json) or a DatasetDict (dataset_dict.json)."""
    if (folder / "dataset_dict.json").is_file():
        names = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        name = _pick_split(list(names), split, str(folder))
        src = _disk_dataset(folder / name, f"{label}/{name}", None)
        src.split = name
        return src
    state = json.loads((folder / "state.json").read_text())
    files = [folder / f["filename"] for f in state.get("_data_files", [])]
    if not files or not all(f.is_file() for f in files):
        raise CorpusError(
            f"{folder} is a damaged save_to_disk folder (state.json names missing Arrow files): "
            "save the dataset again"
        )
    rows = None
    info = folder / "dataset_info.json"
    if info.is_file():
        splits = json.loads(info.read_text()).get("splits") or {}
        rows = sum(s.get("num_examples", 0) for s in splits.values()) or None
    return Source(label, "save_to_disk", files, split, rows)


def _split_of(path: Path) -> str | None:
    """The split a data file belongs to under the hub's conventions: a folder named for it
    (data/train/...) or a file name starting with it (train-00000-of-00001.parquet)."""
    for part in path.parts[:-1]:
        if part in ("train", "validation", "test"):
            return part
    stem = path.name.split(".")[0]
    for sep in ("-", "_"):
        if sep in stem:
            return stem.split(sep)[0]
    return stem


def _hub_dataset(repo_id: str, snap: Path, split: str | None) -> Source:
    files = sorted(
        f for f in snap.rglob("*") if f.suffix in DATA_SUFFIXES and not f.name.startswith(".")
    )
    if not files:
        raise CorpusError(
            f"dataset {repo_id!r} in the local cache ({snap}) has no Parquet or Arrow files: "
            "convert it with datasets' save_to_disk and import that folder"
        )
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(_split_of(f.relative_to(snap)) or "train", []).append(f)
    name = _pick_split(sorted(by_split), split, f"dataset {repo_id!r}")
    return Source(f"{repo_id}/{name}", "hub", by_split[name], name, info={"snapshot": snap.name})


def find_sources(sources: list[str], split: str | None, download: bool) -> list[Source]:
    out = []
    for src in sources:
        path = Path(src)
        label = path.resolve().name if path.exists() else src
        if path.is_file():
            out.append(Source(path.name, path.suffix[1:], [path]))
        elif path.is_dir() and any(
            (path / n).is_file() for n in ("state.json", "dataset_dict.json")
        ):
            out.append(_disk_dataset(path, label, split))
        elif path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.suffix in DATA_SUFFIXES)
            out.append(Source(label, files[0].suffix[1:], files))
        else:
            snap = hub_snapshot(src) or (_fetch(src) if download else None)
            if snap is None:
                raise CorpusError(f"{src}: no such file or folder; check the path")
            out.append(_hub_dataset(src, snap, split))
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):
        raise CorpusError("two inputs have the same name: import them separately")
    return out


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


def import_datasets(
    sources: list[str],
    out: Path,
    *,
    text_field: str = "text",
    split: str | None = None,
    heldout: float = 0.1,
    pretrain: float = 0.0,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> dict:
    """Stream the datasets `sources` into OUT/<split>.jsonl.gz + IMPORT.json (module docstring).

    Every check that needs no full pass (fractions, OUT, each source found, its text column)
    runs before anything is written; OUT is swapped in whole when every row has been read.
    """
    out = Path(out)
    check_import_out(out, heldout, pretrain)
    found = find_sources(sources, split, download)
    for s in found:
        check_field(s, text_field)
    names = [n for n, frac in (("heldout", heldout), ("pretrain", pretrain)) if frac > 0]
    names.append("finetune")
    flags = f" --text-field {text_field}" + (f" --split {split}" if split else "")
    manifest = {
        "rebuild": "cyb data import " + " ".join(sources) + f" --out {out}{flags} "
        f"--heldout {heldout} --pretrain {pretrain} --seed {seed}",
        "rule": STREAM_RULE,
        "seed": seed,
        "heldout": heldout,
        "pretrain": pretrain,
        "text_field": text_field,
        "sources": [],
        "files": {},
    }

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        writers = {n: SplitWriter(tmp, n) for n in names}
        try:
            for s in found:
                stats = {"rows": 0, "docs": 0, "skipped": 0, "chars": 0}
                bar = tqdm(
                    documents(s, text_field, stats),
                    total=s.rows_hint,
                    desc=f"import {s.label}",
                    unit="doc",
                    disable=not progress,
                    file=sys.stderr,
                )
                for doc in bar:
                    for piece in chunk(doc):
                        writers[piece_split(piece["doc_id"], seed, heldout, pretrain)].write(piece)
                bar.close()
                files = [str(f) for f in s.files]
                manifest["sources"].append(
                    {"source": s.label, "kind": s.kind, "split": s.split, "files": files}
                    | s.info
                    | stats
                )
        finally:
            files = {f"{n}.jsonl.gz": w.close() for n, w in writers.items()}
        if not sum(src["docs"] for src in manifest["sources"]):
            raise CorpusError(
                f"{', '.join(sources)}: every {text_field!r} is empty: pass --text-field with "
                "the column that holds the text"
            )
        empty = [n for n in names if not files[f"{n}.jsonl.gz"]["docs"]]
        if empty:
            pieces = sum(f["docs"] for f in files.values())
            raise CorpusError(
                f"only {pieces} piece(s) of text, and none was dealt to {', '.join(empty)}: "
                "add text, pass another --seed, or pass --heldout 0"
            )
        manifest["files"] = files
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        (tmp / IMPORT_MANIFEST).write_text(text, encoding="utf-8")

    atomic_save_dir(out, write)
    return manifest
