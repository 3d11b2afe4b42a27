"""Compaction of the store after a write: DuckDB reuses the blocks a write frees but never
gives them back, so a store written by many small evaluations was a third free blocks.

`compact` rewrites the database into a new file (COPY FROM DATABASE: tables, views,
constraints and rows in their stored order) and renames it over the old one, while the
writer's connection still holds the file's lock, so no other writer can slip in between; a
reader that opened the old file keeps reading it whole. A failed compaction leaves the
database as the committed write left it, and the copy of one that was killed is removed by
the next write.
"""

from __future__ import annotations

import glob
import warnings
from pathlib import Path

import duckdb

from cyb_core.atomic import atomic_write

from .staging import sql_string

# compact when the free blocks are more than this share of the file (and at least MIN_FREE)
FREE_SHARE = 0.10
MIN_FREE = 4
_COPY = "cyb_compacted"  # the new file's name while attached


def free_blocks(con) -> tuple[int, int]:
    """(total, free) blocks of the connection's own database file."""
    return con.execute(
        "SELECT total_blocks, free_blocks FROM pragma_database_size() "
        "WHERE database_name = current_database()"
    ).fetchone()


def compact(con, db_path: Path) -> bool:
    """Rewrite `db_path` without its free blocks when they are over FREE_SHARE of it.

    con: the writer's read-write connection to `db_path`, with no open transaction; it must
    be closed right after (it still points at the old file). Returns whether it compacted."""
    _clear_copies(db_path)
    con.execute("CHECKPOINT")  # the WAL folded into the file: the copy sees every committed row
    total, free = free_blocks(con)
    if free < max(MIN_FREE, FREE_SHARE * total):
        return False
    name = con.execute("SELECT current_database()").fetchone()[0].replace('"', '""')

    def copy(tmp: Path) -> None:
        tmp.unlink()  # DuckDB creates the file; it refuses an empty one
        con.execute(f"ATTACH '{sql_string(str(tmp))}' AS {_COPY}")
        try:
            con.execute(f'COPY FROM DATABASE "{name}" TO {_COPY}')
        finally:
            con.execute(f"DETACH {_COPY}")

    try:
        atomic_write(db_path, copy)
    except (duckdb.Error, OSError) as e:  # the write itself is committed: keep the file as is
        warnings.warn(f"{db_path} was not compacted: {str(e).splitlines()[0]}", stacklevel=2)
        return False
    return True


def _clear_copies(db_path: Path) -> None:
    """Remove the copies (and their WAL) of compactions that were killed before their rename:
    atomic_write's temporary files beside `db_path`. The caller holds the write lock, and only
    a writer compacts, so none of them is being written."""
    for left in db_path.parent.glob(f".{glob.escape(db_path.name)}.*.part*"):
        left.unlink(missing_ok=True)
