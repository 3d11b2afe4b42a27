"""analysis.classes against plain numpy/pandas on a stored synthetic evaluation with sums in it."""

import numpy as np
import pandas as pd
import pytest
from support import RUN, as_version_3, synthetic_result, tokenizer

from analysis import classes, pos, schema, store, summaries
from analysis.evaluation import build_tables
from cyb_core import synthetic

N = 40  # tokens per document, 2 characters each
TEXTS = [
    "ab" * 8 + "\n12 + 7 = 19\n" + "cd" * 3 + "How many x in x o x? 2." + "e" * 17,
    "ab" * 20 + "\n905 + 87 = 992\n" + "f" * 24,
]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    docs = [
        {"doc_id": f"doc{j}", "text": t.ljust(2 * N, "g")[: 2 * N]} for j, t in enumerate(TEXTS)
    ]
    assert all(len(d["text"]) == 2 * N for d in docs)
    result = synthetic_result(w=3, seed=4)
    tables = build_tables(result, docs, pos.tag_texts([d["text"] for d in docs]), tokenizer())
    db = tmp_path_factory.mktemp("classes") / "c.duckdb"
    eid = store.write_eval(
        db, run=RUN, eval_row={"run_id": "synthetic", "dataset": "sums", "mode": "dense"}, **tables
    )
    # the reference: class of the next token from the characters, as the docstring defines it
    cls = []
    for d in docs:
        c = synthetic.token_classes(d["text"], np.arange(N) * 2, np.arange(N) * 2 + 2)
        cls.append(np.append(c[1:], 0))  # the class of the next token, by hand
    frame = pd.DataFrame(
        {
            "cls": np.array(synthetic.CLASSES)[np.concatenate(cls)],
            "nll": result.nll,
            "correct": result.correct,
            "pauses": result.expected_pauses,
            "greedy": result.greedy_pauses,
        }
    )
    return db, eid, result, frame


def test_every_class_is_present_and_counted(stored):
    db, eid, _, frame = stored
    with store.reading(db) as con:
        got = classes.class_summary(con, eid).set_index("token_class")
    assert set(got.index) == {"answer", "synthetic", "natural"}
    want = frame.groupby("cls").agg(
        n=("nll", "size"),
        nll=("nll", "mean"),
        acc=("correct", "mean"),
        pauses=("pauses", "mean"),
        rate=("greedy", lambda g: (g > 0).mean()),
    )
    for c in got.index:
        assert got.loc[c, "n"] == want.loc[c, "n"]
        assert got.loc[c, "nll"] == pytest.approx(want.loc[c, "nll"])
        assert got.loc[c, "accuracy"] == pytest.approx(want.loc[c, "acc"])
        assert got.loc[c, "expected_pauses"] == pytest.approx(want.loc[c, "pauses"])
        assert got.loc[c, "pause_rate"] == pytest.approx(want.loc[c, "rate"])


def _partial(x, y, z):
    r = pd.DataFrame({"x": x, "y": y, "z": z}).rank().corr().to_numpy()
    rxy, rxz, ryz = r[0, 1], r[0, 2], r[1, 2]
    den = (1 - rxz**2) * (1 - ryz**2)
    return rxy, (rxy - rxz * ryz) / np.sqrt(den) if den > 1e-9 else np.nan


def test_partial_spearman_matches_pandas(stored):
    db, eid, result, frame = stored
    with store.reading(db) as con:
        got = classes.class_calibration(con, eid)
    assert set(got["step"]) == {0, 1} and got["partial_spearman"].notna().sum() >= 4
    for row in got.itertuples():
        sel = (frame["cls"] == row.token_class).to_numpy()
        i = row.step
        x, y, z = result.d[sel, i], result.t[sel, i + 1] - result.t[sel, i], result.t[sel, i]
        plain, partial = _partial(x, y, z)
        assert row.n == sel.sum()
        assert row.spearman == pytest.approx(plain, abs=1e-9)
        assert row.partial_spearman == pytest.approx(partial, abs=1e-9, nan_ok=True)
        assert row.mean_gain == pytest.approx(y.mean(), abs=1e-6)  # t stored in float32


def test_calibration_of_one_class_matches_the_general_ranks(stored, tmp_path):
    """An evaluation of one class reuses the class's ranks for the overall row (fewer sorts):
    the same numbers as ranking the overall rows and the class apart."""
    import shutil

    import duckdb

    db, eid, result, _ = stored
    copy = tmp_path / "one.duckdb"
    shutil.copy(db, copy)
    order = "SELECT * EXCLUDE (eval_id) FROM calibration ORDER BY token_class NULLS FIRST, step"
    with duckdb.connect(str(copy)) as con:
        con.execute("UPDATE token_rows SET token_class = 'natural'")
        summaries.refresh(con, eid)  # one class: the shared ranks
        fast = con.execute(order).df()
        con.execute("DELETE FROM calibration")
        summaries.calibrate(con, eid, one_class=False)
        general = con.execute(order).df()
    assert fast["token_class"].fillna("all").tolist() == ["all", "all", "natural", "natural"]
    pd.testing.assert_frame_equal(fast, general, rtol=1e-12)
    for i in (0, 1):  # and both are Spearman on every row
        x, y = result.d[:, i], result.t[:, i + 1] - result.t[:, i]
        ref = pd.Series(x).rank().corr(pd.Series(y).rank())
        assert fast.loc[i, "spearman"] == pytest.approx(ref, abs=1e-6)


def test_evaluations_without_classes_are_refused(stored, tmp_path):
    db, eid, _, _ = stored
    import shutil

    import duckdb

    copy = tmp_path / "old.duckdb"
    shutil.copy(db, copy)
    with duckdb.connect(str(copy)) as con:  # as stored before classes existed
        con.execute("UPDATE token_rows SET token_class = NULL")
        summaries.refresh(con, eid)
    with store.reading(copy) as con, pytest.raises(store.StoreError, match="evaluate it again"):
        classes.class_summary(con, eid)
    assert classes.retag(copy) == 2 * N
    with store.reading(copy) as con, store.reading(db) as ref:
        pd.testing.assert_frame_equal(
            classes.class_summary(con, eid), classes.class_summary(ref, eid)
        )


def test_a_version_1_database_is_upgraded_by_a_write_and_refused_by_readers(stored, tmp_path):
    import shutil

    import duckdb

    db, eid, _, _ = stored
    old = tmp_path / "v1.duckdb"
    shutil.copy(db, old)
    as_version_3(old)
    with duckdb.connect(str(old)) as con:
        con.execute("ALTER TABLE tokens DROP COLUMN token_class")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(store.StoreError, match="upgrades it"):
        store.connect_read(old)
    _, tables = build_tables_again()
    store.write_eval(
        old,
        run=RUN,
        eval_row={"run_id": "synthetic", "dataset": "again", "mode": "dense"},
        **tables,
    )
    with store.reading(old) as con:
        assert schema.schema_version(con) == schema.SCHEMA_VERSION
        rows = con.execute(
            "SELECT eval_id, count(token_class) FROM tokens GROUP BY eval_id ORDER BY eval_id"
        ).fetchall()
    assert rows[0] == ("synthetic:again:dense", 2 * N) and rows[1] == (eid, 0)  # old rows kept


def test_a_version_2_database_gets_positions_per_token_by_upgrade(stored, tmp_path):
    import shutil

    import duckdb

    db, eid, _, _ = stored
    old = tmp_path / "v2.duckdb"
    shutil.copy(db, old)
    as_version_3(old)
    with duckdb.connect(str(old)) as con:
        want = con.execute("SELECT positions FROM evals WHERE eval_id = ?", [eid]).fetchall()
        con.execute("ALTER TABLE evals DROP COLUMN positions")
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with pytest.raises(store.StoreError, match="upgrades it"):
        store.connect_read(old)
    store.upgrade(old)  # what `cyb experiment` does before its first read
    with store.reading(old) as con:
        got = con.execute("SELECT positions FROM evals WHERE eval_id = ?", [eid]).fetchall()
    assert got == want and want[0][0] is not None


def test_a_version_3_database_is_made_lean_by_upgrade_and_browses(stored, tmp_path):
    import shutil

    db, eid, _, _ = stored
    old = tmp_path / "v3.duckdb"
    shutil.copy(db, old)
    as_version_3(old)
    with pytest.raises(store.StoreError, match="schema version 3.*upgrades it"):
        store.connect_read(old)
    store.upgrade(old)
    with store.reading(old) as con, store.reading(db) as ref:
        assert schema.schema_version(con) == schema.SCHEMA_VERSION
        for table in ("token_rows", "vocab", *summaries.SUMMARY_TABLES):
            order = "ALL" if table != "token_rows" else "eval_id, doc_id, idx"
            got = con.execute(f"SELECT * FROM {table} ORDER BY {order}").df()
            pd.testing.assert_frame_equal(
                got, ref.execute(f"SELECT * FROM {table} ORDER BY {order}").df()
            )
        for query in (classes.class_summary, classes.class_calibration):
            pd.testing.assert_frame_equal(query(con, eid), query(ref, eid))
        for table in ("words", "docs"):
            order = "eval_id, doc_id, widx" if table == "words" else "ALL"
            got = con.execute(f"SELECT * FROM {table} ORDER BY {order}").df()
            pd.testing.assert_frame_equal(
                got, ref.execute(f"SELECT * FROM {table} ORDER BY {order}").df()
            )
        key = "SELECT tokens_key, text_key FROM evals"
        assert con.execute(key).fetchall() == ref.execute(key).fetchall()
        assert None not in con.execute(key).fetchall()[0]


def build_tables_again():
    docs = [
        {"doc_id": f"doc{j}", "text": t.ljust(2 * N, "g")[: 2 * N]} for j, t in enumerate(TEXTS)
    ]
    result = synthetic_result(w=3, seed=5)
    return result, build_tables(result, docs, pos.tag_texts([d["text"] for d in docs]), tokenizer())
