"""Staging folders of the store's writer: one per write in progress, beside the database, and
the removal of those left by a writer that was killed before it committed."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STAGING = ".staging-"  # a write's shards: .<db name>.staging-<pid>-<random>/ beside the db
# Rows per Parquet row group of the staged tokens: DuckDB reads row groups in parallel, and
# the writer holds one row group at a time (DuckDB's own row group size)
ROW_GROUP = 122_880


def staging_dirs(db_path: str | Path | None) -> list[Path]:
    """The staging folders beside the database (one per write in progress; none after it)."""
    db_path = Path(db_path)
    legacy = db_path.with_name(db_path.name + ".staging")  # one shared root, older versions
    found = sorted(db_path.parent.glob(f".{glob.escape(db_path.name)}{STAGING}*"))
    return found + ([legacy] if legacy.is_dir() else [])


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale(db_path: Path) -> None:
    """Remove shards left by a process that was killed before it committed."""
    for d in staging_dirs(db_path):
        if d.name.endswith(".staging"):  # the older shared root: its children are the writes
            for child in d.glob("*"):
                parts = child.name.rsplit("-", 2)
                if len(parts) < 3 or not _alive(parts[-2]):
                    shutil.rmtree(child, ignore_errors=True)
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty
        elif not _alive(d.name.rsplit("-", 2)[-2]):
            shutil.rmtree(d, ignore_errors=True)


def stage_tokens(tokens, path: Path) -> int:
    """Write the token rows to one Parquet file, a table or batch at a time; returns the rows."""
    if isinstance(tokens, pa.Table):
        pq.write_table(tokens, path, row_group_size=ROW_GROUP)
        return tokens.num_rows
    n, writer = 0, None
    try:
        for part in tokens:
            if writer is None:
                writer = pq.ParquetWriter(path, part.schema)
            writer.write(part, row_group_size=ROW_GROUP)
            n += part.num_rows
    finally:
        if writer is not None:
            writer.close()
    return n


def sql_string(text: str) -> str:
    """`text` as the inside of a SQL string literal (a path or an id in a statement that
    cannot bind it: DuckDB binds no parameter inside a subquery used as a source twice)."""
    return text.replace("'", "''")
