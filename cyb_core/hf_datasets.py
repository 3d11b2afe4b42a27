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

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .atomic import atomic_save_dir
from .corpus import CorpusError, chunk
from .corpus_import import check_import_out, import_manifest, write_import_manifest
from .hf_stream import SplitWriter, check_field, documents, piece_split
from .names import HUB_ID

DATA_SUFFIXES = (".parquet", ".arrow")
HUB_PATTERNS = ["*.parquet", "*.arrow", "*.json", "*.md"]  # what --download fetches
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
    manifest = import_manifest(
        sources, out, STREAM_RULE, seed, heldout, pretrain, flags, text_field=text_field
    )

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
        write_import_manifest(tmp, manifest, files)

    atomic_save_dir(out, write)
    return manifest
