"""The DuckDB evaluation store: connections, the one atomic write and lookups (the schema and
its upgrades: analysis.schema; staging folders: analysis.staging).

DuckDB lets one read-write process *or* many read-only processes open a file, never both.
So writes are short: an evaluation is computed in memory, staged as Parquet shards next to
the database, and loaded in one transaction by one short-lived read-write connection
(`write_eval`). Readers open read-only with `connect_read`/`reading`, retry with backoff
while a writer holds the lock, and should hold their connection only for a query or a
page (a reader that never closes blocks every writer).

Nothing of an evaluation is visible before its transaction commits: a killed `cyb eval`
leaves the database as it was, and a re-run replaces the old result only on success.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cyb_core.atomic import write_target
from cyb_core.names import parse_mode

from . import compaction, summaries
from .schema import (
    POSITIONS,
    SCHEMA_VERSION,
    WORD_COLUMNS,
    StoreError,
    add_words,
    apply_schema,
    check_version,
    load_rows,
    schema_version,
)
from .staging import STAGING, clean_stale, sql_string, stage_tokens

DEFAULT_DB = Path("data/cyb.duckdb")
EVAL_TABLES = ("token_rows", "vocab", "docs")  # rows keyed by eval_id
# DuckDB's memory on the writer's connection: beyond it the rank sorts of the summaries spill
# to disk (<db>.tmp), so a write's memory does not grow with the evaluation
WRITE_MEMORY = "1GB"
RUN_COLUMNS = tuple("run_id variant recipe w_max params seed train_tokens base status".split())
_ID = re.compile(r"[^:\s]+")


def default_db_path(db: str | Path | None = None, config_db: str | Path | None = None) -> Path:
    """The database every command uses: `db` (an explicit --db), else $CYB_DB, else
    `config_db` (the db of an experiment config), else data/cyb.duckdb (git-ignored)."""
    return Path(db or os.environ.get("CYB_DB") or config_db or DEFAULT_DB)


def make_eval_id(run_id: str, dataset: str, mode: str) -> str:
    """Deterministic: evaluating the same run on the same dataset in the same mode replaces it."""
    for name, v in (("run id", run_id), ("dataset", dataset)):
        if not _ID.fullmatch(v or ""):
            raise StoreError(f"{name} {v!r} must be non-empty without ':' or whitespace")
    try:
        parse_mode(mode)
    except ValueError as e:
        raise StoreError(str(e)) from e
    return f"{run_id}:{dataset}:{mode}"


# ----------------------------------------------------------------------------- connections


def _is_lock_error(e: Exception) -> bool:
    return isinstance(e, duckdb.IOException) and "lock" in str(e).lower()


def _connect(path: Path, read_only: bool, timeout: float):
    """Open with retries while another process holds a conflicting lock (backoff up to 0.5 s)."""
    deadline, wait = time.monotonic() + timeout, 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as e:
            if not _is_lock_error(e):
                raise StoreError(f"cannot open {path}: {str(e).splitlines()[0]}") from e
            if time.monotonic() >= deadline:
                who = (
                    "a writer (`cyb eval`)" if read_only else "another process (a reader or writer)"
                )
                raise StoreError(
                    f"{path} is locked by {who} for more than {timeout:g} s; retry later"
                ) from e
        time.sleep(wait)
        wait = min(wait * 2, 0.5)


def connect_read(path: str | Path | None = None, timeout: float = 5.0):
    """A read-only connection; retries for `timeout` seconds while a writer commits."""
    path = default_db_path(path)
    if not path.is_file():
        raise StoreError(f"no database at {path}; run `cyb eval` first")
    con = _connect(path, True, timeout)
    try:
        check_version(con, path)
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def reading(path: str | Path | None = None, timeout: float = 5.0) -> Iterator:
    """`with reading(db) as con:` - a read-only connection closed on exit."""
    con = connect_read(path, timeout)
    try:
        yield con
    finally:
        con.close()


def check_writable_dir(directory: str | Path, what: str) -> None:
    """Refuse, before any work, a folder that cannot be created or written (`what` names it
    for the message, e.g. "--db data/cyb.duckdb"); writes nothing."""
    base, problem = write_target(directory)
    if problem == "file":
        raise StoreError(f"{what}: {base} is a file, not a folder; choose another path")
    if problem == "read-only":
        raise StoreError(
            f"{what}: {base} is not writable; change its permissions or choose another path"
        )


def check_database(db_path: str | Path | None = None, *, write: bool = True) -> Path:
    """Check, before any work and without writing, that the database can be used.

    write=True (`cyb eval`, `cyb experiment`): a new file in a writable directory, or a cyb
    database of this or an upgradable schema version that is writable (its directory too:
    DuckDB journals beside it and `write_eval` stages its shards there). write=False (the
    app): no file yet, or a readable cyb database. A database locked by a writer is not
    opened (the write checks it again under its lock), nor one this process holds open in the
    other mode (DuckDB refuses that; the caller's own connection checked it). Returns the path."""
    path = default_db_path(db_path)
    if path.exists() and not path.is_file():
        raise StoreError(f"database {path} is a directory; give a file path with --db")
    if write:
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"database {path} is read-only; make it writable or use another --db")
        check_writable_dir(path.parent, f"--db {path}")
    if not path.is_file():
        return path
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as e:
        if _is_lock_error(e) or "different configuration" in str(e):
            return path
        raise StoreError(f"cannot open {path}: {str(e).splitlines()[0]}; use another --db") from e
    try:
        check_version(con, path, upgradable=write)
    finally:
        con.close()
    return path


def upgrade(path: str | Path | None = None, timeout: float = 120.0) -> None:
    """Bring an existing database of an older schema version up to this one (MIGRATIONS), so
    that readers accept it; a current or missing database is left as it is."""
    path = default_db_path(path)
    if not path.is_file():
        return
    with reading(path, timeout) if _current(path, timeout) else connect_write(path, timeout):
        pass


def _current(path: Path, timeout: float) -> bool:
    con = _connect(path, True, timeout)
    try:
        return schema_version(con) in (None, SCHEMA_VERSION)
    finally:
        con.close()


@contextmanager
def connect_write(path: str | Path | None = None, timeout: float = 120.0) -> Iterator:
    """A short-lived read-write connection, schema applied, no progress bar; closed on exit."""
    path = default_db_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(path, False, timeout)
    try:
        con.execute("SET enable_progress_bar = false")
        apply_schema(con)
        yield con
    finally:
        con.close()


# ----------------------------------------------------------------------------- the write


def write_eval(
    db_path: str | Path | None,
    *,
    run: dict,
    eval_row: dict,
    tokens: pa.Table | Iterable[pa.Table | pa.RecordBatch],
    docs: pa.Table,
    words: pa.Table,
    train_log: pa.Table | None = None,
    timeout: float = 120.0,
    before_commit: Callable[[], None] | None = None,
) -> str:
    """Stage the tables as Parquet, then in one transaction replace the evaluation.

    run: a `runs` row (dict); eval_row: run_id, dataset, mode (the rest is computed from
    `tokens`); tokens/docs/words: Arrow tables with the columns of the `tokens` view and the
    docs and words tables except eval_id (tokens may come as an iterable of tables or record
    batches of one schema, staged one at a time: memory does not grow with the evaluation);
    train_log: replaces the run's log when given. The token rows are stored in the lean
    layout (analysis.schema.lean_tokens) and the evaluation's summaries computed
    (analysis.summaries) in the same transaction. `before_commit` runs inside the transaction
    just before COMMIT (tests use it to hold the lock or to die there). Returns the eval_id.
    """
    db_path = default_db_path(db_path)
    eid = make_eval_id(eval_row["run_id"], eval_row["dataset"], eval_row["mode"])
    if isinstance(tokens, pa.Table) and tokens.num_rows == 0:
        raise StoreError("the evaluation has no tokens; nothing written")
    check_database(db_path)  # a foreign or read-only database: refused before anything is staged
    clean_stale(db_path)
    stage = db_path.with_name(f".{db_path.name}{STAGING}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    stage.mkdir()
    try:
        if stage_tokens(tokens, stage / "tokens.parquet") == 0:
            raise StoreError("the evaluation has no tokens; nothing written")
        shards = {"docs": docs, "words": words}
        if train_log is not None:
            shards["train_log"] = train_log
        for name, table in shards.items():
            pq.write_table(table, stage / f"{name}.parquet")
        now = datetime.now(timezone.utc).replace(tzinfo=None)  # noqa: UP017 - datetime.UTC is 3.11+
        with connect_write(db_path, timeout) as con:
            con.execute(f"SET memory_limit = '{WRITE_MEMORY}'")
            con.begin()
            try:
                _load(con, eid, run, eval_row, stage, train_log is not None, now)
                if before_commit is not None:
                    before_commit()
                con.commit()
            except BaseException as e:
                con.rollback()
                if isinstance(e, duckdb.Error):
                    raise StoreError(
                        f"writing {eid} failed, nothing changed: {str(e).splitlines()[0]}"
                    ) from e
                raise
            compaction.compact(con, db_path)  # still under the write lock
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return eid


def _load(
    con, eid: str, run: dict, eval_row: dict, stage: Path, with_log: bool, now: datetime
) -> None:
    values = [run.get(c) for c in RUN_COLUMNS]
    values[4] = json.dumps(run.get("params") or {})
    updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS[1:])  # created_at: kept
    con.execute(
        f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}, created_at) VALUES ({', '.join('?' * len(RUN_COLUMNS))}, ?) "
        f"ON CONFLICT (run_id) DO UPDATE SET {updates}",
        [*values, now],
    )
    if with_log:
        con.execute("DELETE FROM train_log WHERE run_id = ?", [run["run_id"]])
        con.execute(
            "INSERT INTO train_log BY NAME SELECT ? AS run_id, * FROM read_parquet(?)",
            [run["run_id"], str(stage / "train_log.parquet")],
        )
    for table in (*EVAL_TABLES, *summaries.SUMMARY_TABLES, "evals"):  # constants only
        con.execute(f"DELETE FROM {table} WHERE eval_id = ?", [eid])
    path = str(stage / "tokens.parquet")
    load_rows(con, eid, str(stage / "docs.parquet"), path)
    # the evaluation's own numbers from the rows as they came (before single precision)
    con.execute(
        "INSERT INTO evals (eval_id, run_id, dataset, mode, n_tokens, ppl, mean_expected_pauses, "
        "status, created_at, positions) SELECT ?, ?, ?, ?, count(*), exp(avg(nll)), "
        f"avg(expected_pauses), 'complete', ?, coalesce({POSITIONS}, ?) "
        f"FROM read_parquet('{sql_string(path)}')",
        [eid, *(eval_row[k] for k in ("run_id", "dataset", "mode")), now, run.get("w_max") or 1],
    )
    words = sql_string(str(stage / "words.parquet"))
    add_words(con, eid, f"(SELECT {WORD_COLUMNS} FROM read_parquet('{words}'))")
    summaries.refresh(con, eid)


def stored_pauses(db_path: str | Path | None, eval_id: str) -> dict[str, list[int]] | None:
    """{doc_id: pauses in context per input token, in token order} of a complete evaluation
    that placed pauses per token; None when the database holds no such evaluation."""
    db_path = default_db_path(db_path)
    if not db_path.is_file():
        return None
    with reading(db_path) as con:
        if not con.execute(
            "SELECT 1 FROM evals WHERE eval_id = ? AND status = 'complete'", [eval_id]
        ).fetchall():
            return None
        rows = con.execute(
            "SELECT doc_id, list(pauses ORDER BY idx) FROM tokens WHERE eval_id = ? GROUP BY doc_id",
            [eval_id],
        ).fetchall()
    return dict(rows)


# ----------------------------------------------------------------------------- lookups


def require_eval(con, eval_id: str) -> dict:
    """The evals row joined with its run's w_max and variant; StoreError naming what exists."""
    rows = con.execute(
        "SELECT e.eval_id, e.run_id, e.dataset, e.mode, e.n_tokens, coalesce(r.w_max, 1), r.variant "
        "FROM evals e LEFT JOIN runs r USING (run_id) WHERE e.eval_id = ? AND e.status = 'complete'",
        [eval_id],
    ).fetchall()  # fetchall: a result left open (fetchone) would block the caller's next con.sql()
    if not rows:
        known = [
            r[0]
            for r in con.execute(
                "SELECT eval_id FROM evals WHERE status = 'complete' ORDER BY eval_id LIMIT 8"
            ).fetchall()
        ]
        raise StoreError(
            f"no evaluation {eval_id!r} in the database"
            + (f"; known: {', '.join(known)}" if known else "; run `cyb eval` first")
        )
    keys = ("eval_id", "run_id", "dataset", "mode", "n_tokens", "w_max", "variant")
    return dict(zip(keys, rows[0], strict=True))


def find_eval(con, run_id: str, dataset: str | None = None, mode: str | None = None) -> str:
    """The eval_id of a run's evaluation; dataset/mode narrow it down when the run has several."""
    rows = con.execute(
        "SELECT eval_id FROM evals WHERE run_id = ? AND status = 'complete' "
        "AND (? IS NULL OR dataset = ?) AND (? IS NULL OR mode = ?) ORDER BY eval_id",
        [run_id, dataset, dataset, mode, mode],
    ).fetchall()
    if not rows:
        runs = [
            r[0]
            for r in con.execute("SELECT DISTINCT run_id FROM evals ORDER BY 1 LIMIT 8").fetchall()
        ]
        what = (
            f"run {run_id!r}"
            + (f" on {dataset!r}" if dataset else "")
            + (f" in {mode} mode" if mode else "")
        )
        raise StoreError(
            f"no evaluation of {what}"
            + (
                f"; runs with evaluations: {', '.join(runs)}"
                if runs
                else "; the database has no evaluations yet"
            )
        )
    if len(rows) > 1:
        raise StoreError(
            f"run {run_id!r} has {len(rows)} evaluations ({', '.join(r[0] for r in rows)}); "
            "choose one with --dataset/--mode"
        )
    return rows[0][0]


# ----------------------------------------------------------------------------- serving


@contextmanager
def reading_quietly(path: str | Path | None = None, timeout: float = 5.0) -> Iterator:
    """`reading` without DuckDB's progress bar, which would fill a server's log (the app's)."""
    with reading(path, timeout) as con:
        con.execute("SET enable_progress_bar = false")
        yield con


def eval_summary(db_path: str | Path, eval_id: str) -> dict | None:
    """Perplexity and mean expected pauses of the complete evaluation `eval_id`; None when it
    is not there (or there is no database yet)."""
    if not Path(db_path).exists():
        return None
    with reading(db_path) as con:
        rows = con.execute(
            "SELECT ppl, mean_expected_pauses, positions FROM evals "
            "WHERE eval_id = ? AND status = 'complete'",
            [eval_id],
        ).fetchall()
    keys = ("ppl", "mean_expected_pauses", "positions")
    return dict(zip(keys, rows[0], strict=True)) if rows else None
