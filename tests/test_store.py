import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from support import ROOT, RUN, fixture_db, synthetic_tables

from analysis import pos, schema, staging, store
from analysis.eval_inputs import EvalError, load_docs, read_text_file
from analysis.eval_targets import resolve_target
from analysis.evaluation import run_eval
from analysis.store import StoreError
from cyb_core import adaptive  # noqa: F401  (the adaptive mode: a broken import fails here)


@pytest.fixture(scope="module")
def fixture():
    return fixture_db()


def copy_db(db: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(db, dest / db.name)
    return dest / db.name


def counts(db: Path) -> dict:
    with store.reading(db) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in schema.TABLES}


# ----------------------------------------------------------------------------- schema


def test_schema_applied_twice_is_a_noop(fixture, tmp_path):
    db = copy_db(fixture[0], tmp_path)
    before = counts(db)
    with duckdb.connect(str(db)) as con:
        cols = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns ORDER BY ALL"
        ).fetchall()
        schema.apply_schema(con)
        schema.apply_schema(con)
        assert (
            con.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns ORDER BY ALL"
            ).fetchall()
            == cols
        )
        assert con.execute("SELECT * FROM meta").fetchall() == [
            ("schema_version", str(schema.SCHEMA_VERSION))
        ]
    assert counts(db) == before
    fresh = tmp_path / "fresh.duckdb"
    with store.connect_write(fresh) as con:
        schema.apply_schema(con)
        assert schema.schema_version(con) == schema.SCHEMA_VERSION
        assert {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        } == {*schema.TABLES, *schema.VIEWS}


def test_other_schema_version_and_foreign_database_are_refused(fixture, tmp_path):
    db = copy_db(fixture[0], tmp_path)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    before = counts_unchecked(db)
    with pytest.raises(StoreError, match="schema version 999"):
        store.connect_read(db)
    _, tables = synthetic_tables()
    with pytest.raises(StoreError, match="schema version 999") as e:
        store.write_eval(
            db, run=RUN, eval_row={"run_id": "synthetic", "dataset": "x", "mode": "dense"}, **tables
        )
    assert "\n" not in str(e.value)
    assert counts_unchecked(db) == before
    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as con:
        con.execute("CREATE TABLE sales AS SELECT 1 AS x")
    with pytest.raises(StoreError, match="not a cyb database"):
        store.write_eval(
            foreign,
            run=RUN,
            eval_row={"run_id": "synthetic", "dataset": "x", "mode": "dense"},
            **tables,
        )
    with duckdb.connect(str(foreign), read_only=True) as con:
        assert con.execute("SELECT table_name FROM information_schema.tables").fetchall() == [
            ("sales",)
        ]


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE meta (id INTEGER, note VARCHAR)",  # its own meta: other columns
        "CREATE TABLE meta (key VARCHAR, value VARCHAR); INSERT INTO meta VALUES ('owner', 'x')",
        "CREATE TABLE meta (key VARCHAR, value VARCHAR); CREATE TABLE runs (run_id VARCHAR)",
    ],
)
def test_a_foreign_database_with_a_meta_table_is_never_modified(ddl, tmp_path):
    foreign = tmp_path / "theirs.duckdb"
    with duckdb.connect(str(foreign)) as con:
        con.execute(ddl)
    before = foreign.read_bytes()
    _, tables = synthetic_tables()
    for check in (
        lambda: store.check_database(foreign),
        lambda: store.connect_read(foreign),
        lambda: store.write_eval(
            foreign, run=RUN, eval_row={"run_id": "s", "dataset": "x", "mode": "dense"}, **tables
        ),
    ):
        with pytest.raises(StoreError, match="not a cyb database"):
            check()
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.duckdb"]  # no staging, no WAL


def test_check_database_refuses_before_writing(tmp_path):
    (tmp_path / "garbage.duckdb").write_text("not a database")
    with pytest.raises(StoreError, match="cannot open"):
        store.check_database(tmp_path / "garbage.duckdb")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        store.check_database(tmp_path / "file" / "cyb.duckdb")
    with pytest.raises(StoreError, match="is a directory"):
        store.check_database(tmp_path)
    new = tmp_path / "new" / "cyb.duckdb"
    assert store.check_database(new) == new and not new.parent.exists()  # nothing created


def counts_unchecked(db: Path) -> dict:
    with duckdb.connect(str(db), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in schema.TABLES}


# ----------------------------------------------------------------------------- the fixture evaluation


def test_fixture_evaluation_rows(fixture):
    db, run, summary = fixture
    with store.reading(db) as con:
        ev = con.execute("SELECT * FROM evals").df()
        tok = con.execute("SELECT * FROM tokens ORDER BY doc_id, idx").df()
        r = con.execute("SELECT * FROM runs").df().iloc[0]
        log = con.execute("SELECT * FROM train_log ORDER BY step").df()
        ndocs = con.execute("SELECT count(*) FROM docs").fetchall()[0][0]
    assert len(ev) == 1 and ev["status"][0] == "complete" and ev["eval_id"][0] == summary["eval_id"]
    assert (
        summary["eval_id"] == "tiny-cyb:fixture/heldout.c1500:dense"
    )  # run dir name, root/split, truncation
    assert ev["n_tokens"][0] == len(tok) == summary["n_tokens"] and ndocs == 5
    s, t, dk = (np.stack(tok[c].to_numpy()) for c in ("s", "t", "dk"))
    assert s.shape[1] == t.shape[1] == 3 and dk.shape[1] == 2
    np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(tok["nll"], -np.log((s * t).sum(1)), rtol=1e-4)
    # ppl from the rows as written (double); the stored nll is single precision
    assert ev["ppl"][0] == pytest.approx(math.exp(tok["nll"].astype(float).mean()), rel=1e-6)
    np.testing.assert_allclose(
        tok["expected_pauses"], (s * np.arange(3)).sum(1), rtol=1e-5, atol=1e-6
    )
    assert tok["pauses"].isna().all()
    assert (r["run_id"], r["variant"], r["w_max"], r["seed"], r["base"], r["status"]) == (
        "tiny-cyb",
        "cyb-ap",
        3,
        7,
        "data/base",
        "complete",
    )
    assert r["train_tokens"] == 4096 and json.loads(r["params"])["config"]["hparams"] == {
        "omega": "0:0:1"
    }
    assert log["step"].tolist() == [1, 2, 3, 4]  # the torn last line of log.jsonl is skipped
    # every row of a document carries its spaCy annotation; only whitespace/end-of-text rows lack one
    eot = tok["char_start"] == tok["char_end"]
    assert tok.loc[eot, "word"].isna().all() and tok.loc[~eot, "word"].notna().mean() > 0.95
    assert set(tok["word_start"].dropna()) == {True, False}


def test_reevaluation_replaces_only_on_success(fixture, tmp_path):
    db = copy_db(fixture[0], tmp_path)
    eid = fixture[2]["eval_id"]
    run_id, dataset, mode = eid.split(":")
    _, tables = synthetic_tables()

    def boom():
        raise RuntimeError("simulated failure inside the transaction")

    before = counts(db)
    with pytest.raises(RuntimeError, match="simulated"):
        store.write_eval(
            db,
            run={**RUN, "run_id": run_id},
            eval_row={"run_id": run_id, "dataset": dataset, "mode": mode},
            before_commit=boom,
            **tables,
        )
    assert counts(db) == before
    assert staging.staging_dirs(db) == []  # the shards are gone, and no folder is left
    store.write_eval(
        db,
        run={**RUN, "run_id": run_id},
        eval_row={"run_id": run_id, "dataset": dataset, "mode": mode},
        **tables,
    )
    with store.reading(db) as con:
        assert (
            con.execute("SELECT n_tokens FROM evals WHERE eval_id = ?", [eid]).fetchall()[0][0]
            == tables["tokens"].num_rows
        )
        assert (
            con.execute("SELECT count(*) FROM tokens WHERE eval_id = ?", [eid]).fetchall()[0][0]
            == tables["tokens"].num_rows
        )
        assert con.execute("SELECT count(*) FROM evals").fetchall()[0][0] == 1
    assert staging.staging_dirs(db) == []  # after success too: nothing but the database beside it
    assert not [p for p in db.parent.iterdir() if "staging" in p.name]


def test_adaptive_storage(tmp_path):
    result, tables = synthetic_tables(adaptive=True)
    db = tmp_path / "a.duckdb"
    eid = store.write_eval(
        db,
        run=RUN,
        eval_row={"run_id": "synthetic", "dataset": "syn", "mode": "adaptive"},
        **tables,
    )
    with store.reading(db) as con:
        tok = con.execute("SELECT * FROM tokens ORDER BY doc_id, idx").df()
        ev = con.execute("SELECT * FROM evals").df()
        vectors = con.execute("SELECT dk, t, s, pauses FROM tokens ORDER BY doc_id, idx").fetchall()
    assert eid == "synthetic:syn:adaptive" and ev["mode"][0] == "adaptive"
    assert tok["pauses"].tolist() == result.pauses.tolist()
    # steps after the answer are NULL, s is one-hot at the answer step
    for dk, t, s, p in vectors:
        assert [v is None for v in t] == [i > p for i in range(3)]
        assert [v is None for v in dk] == [i > p for i in range(2)]
        assert s == [float(i == p) for i in range(3)]
    assert ev["ppl"][0] == pytest.approx(math.exp(result.nll.mean()))


def test_baseline_rows_have_w_1(tmp_path):
    result, tables = synthetic_tables(w=1)
    db = tmp_path / "b.duckdb"
    store.write_eval(
        db,
        run={**RUN, "w_max": 1, "variant": "baseline"},
        eval_row={"run_id": "synthetic", "dataset": "syn", "mode": "dense"},
        **tables,
    )
    with store.reading(db) as con:
        assert con.execute("SELECT DISTINCT len(dk), len(t), len(s) FROM tokens").fetchall() == [
            (0, 1, 1)
        ]


# ----------------------------------------------------------------------------- concurrency and kills

WRITER = """
import sys, time
from pathlib import Path
import pyarrow.parquet as pq
from analysis import store
db, src, ready, hold = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
tables = {n: pq.read_table(src / f"{n}.parquet") for n in ("tokens", "docs", "words")}
def hold_lock():
    ready.touch()
    time.sleep(hold)
store.write_eval(db, run={"run_id": "other", "variant": "cyb-ap", "recipe": "constant", "w_max": 3},
                 eval_row={"run_id": "other", "dataset": "syn", "mode": "dense"}, before_commit=hold_lock, **tables)
"""


def start_writer(db: Path, tables: dict, tmp: Path, hold: float) -> tuple[subprocess.Popen, Path]:
    src = tmp / "src"
    src.mkdir()
    for name in ("tokens", "docs", "words"):
        pq.write_table(tables[name], src / f"{name}.parquet")
    ready = tmp / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(src), str(ready), str(hold)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, "the writer died before it took the lock"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc, ready


def test_killed_writer_leaves_no_partial_rows_and_a_rerun_completes(fixture, tmp_path):
    db = copy_db(fixture[0], tmp_path / "db")
    before = counts(db)
    _, tables = synthetic_tables()
    proc, _ = start_writer(db, tables, tmp_path, hold=60)  # inside the transaction, rows inserted
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert counts(db) == before  # nothing of "other" is visible, the old evaluation is intact
    with store.reading(db) as con:
        assert (
            con.execute("SELECT count(*) FROM tokens WHERE eval_id LIKE 'other:%'").fetchall()[0][0]
            == 0
        )
    store.write_eval(
        db,
        run={**RUN, "run_id": "other"},
        eval_row={"run_id": "other", "dataset": "syn", "mode": "dense"},
        **tables,
    )
    assert staging.staging_dirs(db) == []  # the killed writer's shards were cleaned up too
    with store.reading(db) as con:
        assert con.execute("SELECT count(*) FROM evals").fetchall()[0][0] == 2
        assert (
            con.execute("SELECT count(*) FROM tokens WHERE eval_id = 'other:syn:dense'").fetchall()[
                0
            ][0]
            == tables["tokens"].num_rows
        )


def test_reader_waits_for_the_writer_and_sees_whole_evaluations(fixture, tmp_path):
    db = copy_db(fixture[0], tmp_path / "db")
    _, tables = synthetic_tables()
    proc, ready = start_writer(db, tables, tmp_path, hold=1.5)
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="locked"):  # the lock is really held right now
        store.connect_read(db, timeout=0.2)
    with store.reading(db, timeout=30) as con:  # retries with backoff until the commit
        waited = time.monotonic() - t0
        rows = con.execute(
            "SELECT e.eval_id, e.n_tokens, count(t.idx) FROM evals e LEFT JOIN tokens t USING (eval_id) "
            "GROUP BY ALL ORDER BY 1"
        ).fetchall()
    assert proc.wait(30) == 0
    assert waited > 0.5
    assert [r[0] for r in rows] == ["other:syn:dense", fixture[2]["eval_id"]]
    assert all(n == c for _, n, c in rows)


# ----------------------------------------------------------------------------- bad input


def test_bad_text_files_are_one_line_errors(tmp_path):
    cases = {
        "empty.txt": b"  \n\n",
        "binary.bin": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "latin1.txt": "caf\xe9".encode("latin-1"),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(EvalError, match="empty|binary|not UTF-8") as e:
            read_text_file(tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(EvalError, match="no text file"):
        read_text_file(tmp_path / "missing.txt")
    (tmp_path / "ok.txt").write_bytes("\ufeffIt wasn't me.\r\n".encode())
    assert load_docs(text=tmp_path / "ok.txt") == (
        "text/ok.txt",
        [{"doc_id": "ok.txt", "text": "It wasn't me.\n"}],
    )


def test_bad_targets_and_ids(fixture, tmp_path):
    db, run, _ = fixture
    before = counts(db)
    with pytest.raises(EvalError, match="no run or checkpoint"):
        resolve_target(tmp_path / "nope")
    with pytest.raises(EvalError, match="neither a run directory"):
        resolve_target(tmp_path)
    with pytest.raises(StoreError, match="':'"):
        store.make_eval_id("a:b", "heldout", "dense")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(EvalError, match="empty"):
        run_eval(run, text=tmp_path / "empty.txt", db=db, progress=False)
    with store.reading(db) as con:
        with pytest.raises(StoreError, match="no evaluation of run 'ghost'"):
            store.find_eval(con, "ghost")
        with pytest.raises(StoreError, match="no evaluation 'ghost:x:dense'"):
            store.require_eval(con, "ghost:x:dense")
    assert counts(db) == before
    with pytest.raises(StoreError, match="no database"):
        store.connect_read(tmp_path / "missing.duckdb")


def test_targets_resolve_to_run_names(fixture):
    run = fixture[1]
    for path in (run, run / "final"):
        t = resolve_target(path)
        assert (t.run_id, t.checkpoint, t.status) == ("tiny-cyb", run / "final", "complete")
    t = resolve_target(run / "final", run_id="custom")
    assert t.run_id == "custom"


def test_adaptive_evaluation_end_to_end(fixture, tmp_path):
    db = copy_db(fixture[0], tmp_path)
    text = tmp_path / "story.txt"
    text.write_text("The patients wasn't happy, but they won. The students didn't know. " * 2)
    s = run_eval(fixture[1], text=text, mode="adaptive", db=db, progress=False)
    assert s["eval_id"] == "tiny-cyb:text/story.txt:adaptive"
    with store.reading(db) as con:
        rows = con.execute(
            "SELECT pauses, greedy_pauses, expected_pauses, s, t, nll FROM tokens WHERE eval_id = ?",
            [s["eval_id"]],
        ).fetchall()
        assert (
            con.execute("SELECT count(*) FROM evals").fetchall()[0][0] == 2
        )  # next to the dense one
    assert len(rows) == s["n_tokens"] > 20
    for p, g, e, svec, t, nll in rows:
        assert 0 <= p <= 2 and g == p and e == p and svec[p] == 1
        assert [v is None for v in t] == [i > p for i in range(3)]
        assert nll == pytest.approx(-math.log(t[p]), rel=1e-5)


def test_no_lock_is_held_while_evaluating(fixture, tmp_path):
    """Readers keep working during the long part of `cyb eval` (model + spaCy): the database
    is opened only for the final load. In this process an open read-write connection would
    make the read-only open below fail, so a successful read proves no writer is open."""
    db = copy_db(fixture[0], tmp_path)
    seen = []

    class ReadingNLP:  # spaCy, plus a reader query each time it is asked to tag
        def pipe(self, texts, **kw):
            with store.reading(db, timeout=0.1) as con:
                seen.append(con.execute("SELECT count(*) FROM evals").fetchall()[0][0])
            return pos.load_nlp().pipe(texts, **kw)

    text = tmp_path / "t.txt"
    text.write_text("They won. " * 20)
    run_eval(fixture[1], text=text, db=db, progress=False, nlp=ReadingNLP())
    assert seen == [1] and counts(db)["evals"] == 2


def test_evaluations_of_one_text_share_its_words(tmp_path):
    db = tmp_path / "w.duckdb"
    _, tables = synthetic_tables()
    words = tables["words"].to_pandas()
    other = {**tables, "words": tables["words"].slice(1)}  # another text's words

    def write(run_id: str, t: dict) -> str:
        return store.write_eval(
            db,
            run={**RUN, "run_id": run_id},
            eval_row={"run_id": run_id, "dataset": "syn", "mode": "dense"},
            **t,
        )

    def stored() -> int:
        with store.reading(db) as con:
            return con.execute("SELECT count(*) FROM text_words").fetchall()[0][0]

    a, b = write("a", tables), write("b", tables)
    assert stored() == len(words)  # once for both
    with store.reading(db) as con:
        for eid in (a, b):
            got = con.execute(
                "SELECT * EXCLUDE (eval_id) FROM words WHERE eval_id = ? ORDER BY doc_id, widx",
                [eid],
            ).df()
            assert got.astype(words.dtypes).equals(words)
        keys = con.execute("SELECT DISTINCT text_key FROM evals").fetchall()
    assert len(keys) == 1 and keys[0][0] is not None
    write("a", other)
    assert stored() == 2 * len(words) - 1  # b still reads the first text
    write("b", other)
    assert stored() == len(words) - 1  # no evaluation reads the first text any more


# ----------------------------------------------------------------------------- compaction


def _dump(db: Path) -> dict:
    """Every table's rows in stored order, and the views' row counts."""
    with store.reading(db) as con:
        out = {t: con.execute(f"SELECT * FROM {t}").fetchall() for t in schema.TABLES}
        out |= {v: con.execute(f"SELECT count(*) FROM {v}").fetchall() for v in schema.VIEWS}
    return out


def _write_many(db: Path, times: int) -> None:
    for i in range(times):  # replacing evaluations is what frees blocks
        _, tables = synthetic_tables(seed=i)
        for dataset in ("x", "y"):
            store.write_eval(
                db, run=RUN, eval_row={"run_id": "synthetic", "dataset": dataset, "mode": "dense"},
                **tables,
            )  # fmt: skip


def test_compaction_keeps_every_row_in_order_and_frees_the_blocks(tmp_path, monkeypatch):
    from analysis import compaction

    db = tmp_path / "c.duckdb"
    monkeypatch.setattr(compaction, "FREE_SHARE", 2.0)  # never: the slow reference
    _write_many(db, 3)
    before, size = _dump(db), db.stat().st_size
    with store.reading(db) as con:
        total, free = compaction.free_blocks(con)
    assert free >= 4  # the writes left free blocks behind
    monkeypatch.setattr(compaction, "FREE_SHARE", 0.0)
    with store.connect_write(db) as con:
        assert compaction.compact(con, db)
    assert _dump(db) == before and db.stat().st_size < size
    with store.reading(db) as con:
        assert (
            compaction.free_blocks(con)[1] == 0
            and schema.schema_version(con) == schema.SCHEMA_VERSION
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.duckdb"]  # no copy, no WAL left
    _write_many(db, 1)  # the compacted file takes writes


def test_every_write_leaves_at_most_the_free_share(tmp_path):
    from analysis import compaction

    db = tmp_path / "c.duckdb"
    for _ in range(3):
        _write_many(db, 1)
        with store.reading(db) as con:
            total, free = compaction.free_blocks(con)
        assert free < max(compaction.MIN_FREE, compaction.FREE_SHARE * total)


def test_a_failed_compaction_keeps_the_committed_write(tmp_path, monkeypatch):
    from analysis import compaction

    db = tmp_path / "c.duckdb"
    _write_many(db, 1)
    before = _dump(db)

    def full_disk(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compaction, "FREE_SHARE", 0.0)
    monkeypatch.setattr(compaction, "MIN_FREE", 0)
    monkeypatch.setattr(compaction, "atomic_write", full_disk)
    with pytest.warns(UserWarning, match="not compacted: .*No space left"):
        _write_many(db, 1)
    after = _dump(db)
    assert after["evals"] != before["evals"]  # the second write landed (new created_at)
    assert len(after["token_rows"]) == len(before["token_rows"])


def test_the_next_write_removes_the_copy_of_a_killed_compaction(tmp_path):
    db = tmp_path / "c.duckdb"
    _write_many(db, 1)
    before = _dump(db)
    # what a compaction killed before its rename leaves: atomic_write's copy and its WAL
    left = [tmp_path / ".c.duckdb.k1ll3d.part", tmp_path / ".c.duckdb.k1ll3d.part.wal"]
    other = tmp_path / ".d.duckdb.x.part"  # another database's: not this writer's to remove
    for p in (*left, other):
        p.write_bytes(b"half a copy")
    store.write_eval(
        db, run=RUN, eval_row={"run_id": "synthetic", "dataset": "x", "mode": "dense"},
        **synthetic_tables(seed=0)[1],
    )  # fmt: skip
    assert not any(p.exists() for p in left) and other.exists()
    assert sorted(_dump(db)["token_rows"]) == sorted(before["token_rows"])  # x written again


def test_a_second_evaluation_of_a_text_adds_its_words_in_bounded_memory():
    """add_words asks once whether the text's words are stored: as an anti-join per word row
    it hashed every stored word row of the text, past the writer's memory limit at 50M rows
    (here 2M rows and a 32 MB limit, which that plan did not fit)."""
    con = duckdb.connect()
    con.execute(schema.SCHEMA_FILE.read_text())
    for e in ("a", "b"):
        con.execute("INSERT INTO evals (eval_id) VALUES (?)", [e])
        con.execute("INSERT INTO docs (eval_id, doc_id, text) VALUES (?, 'd', 'x')", [e])
    words = """(SELECT 'd' AS doc_id, i::INTEGER AS widx, i::INTEGER AS char_start,
                       1::USMALLINT AS char_len, 'w' AS word, 'NOUN' AS upos, 'NN' AS tag,
                       '' AS morph, false AS sent_start, true AS space_after
                FROM range(2000000) t(i))"""
    schema.add_words(con, "a", words)
    con.execute("SET memory_limit = '32MB'")
    schema.add_words(con, "b", words)
    assert con.execute("SELECT count(*), count(DISTINCT text_key) FROM text_words").fetchall() == [
        (2_000_000, 1)
    ]
    keys = con.execute("SELECT DISTINCT text_key FROM evals").fetchall()
    assert len(keys) == 1 and keys[0][0] is not None
