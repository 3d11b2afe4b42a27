import json
import math
import shutil

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from support import RUN, fixture_db, scratch, synthetic_tables, token_rows

from analysis import groups, store
from analysis import queries as q
from analysis import text as text_q
from analysis.store import StoreError


def one_more_pause(tok: pa.Table) -> pa.Table:
    """The token rows with one pause more before every answer: W one larger, s moved one step
    on (d_0 = 1, t_0 repeated), so each token's expected and greedy pauses are one more (the
    store derives expected_pauses from s)."""
    return duckdb.sql(
        """SELECT * REPLACE (list_prepend(1::FLOAT, dk) AS dk, list_prepend(t[1], t) AS t,
                             list_prepend(0::FLOAT, s) AS s, expected_pauses + 1 AS expected_pauses,
                             greedy_pauses + 1 AS greedy_pauses) FROM tok"""
    ).to_arrow_table()


@pytest.fixture(scope="module")
def db():
    """The fixture evaluation plus a copy of it, under run "shifted", with one more pause."""
    src, _, summary = fixture_db()
    path = scratch() / "q.duckdb"
    shutil.copy(src, path)
    with store.reading(path) as con:
        tables = {
            t: con.sql(
                f"SELECT * EXCLUDE (eval_id) FROM {t} WHERE eval_id = ?",
                params=[summary["eval_id"]],
            ).to_arrow_table()
            for t in ("tokens", "docs", "words")
        }
    tables["tokens"] = one_more_pause(tables["tokens"])
    run = {
        "run_id": "shifted",
        "variant": "cyb-ap",
        "recipe": "constant",
        "w_max": 4,
        "status": "checkpoint",
    }
    store.write_eval(
        path,
        run=run,
        eval_row={"run_id": "shifted", "dataset": "fixture/heldout.c1500", "mode": "dense"},
        **tables,
    )
    tables["tokens"] = tables["tokens"].slice(
        1
    )  # not the same tokens any more: an unpaired comparison
    store.write_eval(
        path,
        run={**run, "run_id": "cut"},
        eval_row={"run_id": "cut", "dataset": "fixture/heldout.c1500", "mode": "dense"},
        **tables,
    )
    with store.reading(path) as con:
        yield con, summary["eval_id"], "shifted:fixture/heldout.c1500:dense"


@pytest.fixture(scope="module")
def rows(db):
    con, eid, _ = db
    return token_rows(con, eid)


def test_token_stats_match_pandas(db, rows):
    con, eid, _ = db
    st = q.token_stats(con, eid, "expected", min_count=5).set_index("token_id")
    ref = rows.groupby("token_id")["expected_pauses"].agg(["size", "mean", "median", "var"])
    ref = ref[ref["size"] >= 5]
    assert sorted(st.index) == sorted(ref.index)
    np.testing.assert_array_equal(st.loc[ref.index, "n"], ref["size"])
    for a, b in (("mean", "mean"), ("median", "median"), ("variance", "var")):
        np.testing.assert_allclose(st.loc[ref.index, a], ref[b], rtol=1e-9, atol=1e-12)
    g = q.token_stats(con, eid, "greedy", min_count=1)
    assert g["n"].sum() == len(rows) and set(g["median"]) <= {0.0, 0.5, 1.0, 1.5, 2.0}
    with pytest.raises(StoreError, match="adaptive"):
        q.token_stats(con, eid, "observed")


def test_quadrants(db):
    con, eid, _ = db
    quad = q.token_quadrants(con, eid, "expected", min_count=5, top=3)
    assert set(zip(quad["median_level"], quad["variance_level"], strict=True)) == {
        ("low", "low"),
        ("low", "high"),
        ("high", "low"),
        ("high", "high"),
    }
    assert quad.groupby(["median_level", "variance_level"]).size().max() <= 3
    low, th = quad["median_level"] == "low", quad["median_threshold"].iloc[0]
    assert (quad.loc[low, "median"] <= th).all() and (quad.loc[~low, "median"] > th).all()
    assert (quad["n"] >= 5).all()


@pytest.mark.parametrize("by", list(q.GROUPS))
def test_pause_rates_by_group(db, rows, by):
    con, eid, _ = db
    r = q.pause_rates(con, eid, by, n_boot=300)
    assert (r["ci_low"] <= r["mean"] + 1e-12).all() and (r["mean"] <= r["ci_high"] + 1e-12).all()
    if by in ("upos", "tag"):
        ref = rows.dropna(subset=[by]).groupby(by)["expected_pauses"].mean()
        np.testing.assert_allclose(r.set_index(by).loc[ref.index, "mean"], ref, rtol=1e-9)
    expected = {"number": {"Sing", "Plur"}, "word_start": {"word-initial", "continuation"}}.get(by)
    if expected:
        assert set(r[by]) == expected
    if by == "contraction":
        assert "other" in set(r[by]) and r["n"].sum() == len(rows)


def test_contraction_groups_follow_the_model_tokens():
    con = duckdb.connect()
    df = pd.DataFrame(
        {
            "token": [" wasn", "'t", " they", "'ll", " the", "’s", " 1", None],
            "next_token": ["'t", " x", "'ll", " y", " z", " w", "'s", "'t"],
        }
    )
    con.register("tokens", df)
    kinds = f"{groups.token_kind('token')} AS token_kind, {groups.token_kind('next_token')} AS next_kind"
    got = con.execute(f"SELECT {q.GROUPS['contraction']} FROM (SELECT {kinds} FROM tokens)")
    assert [g[0] for g in got.fetchall()] == [
        "stem before 't",
        "clitic 't",
        "stem before 's 're 've 'll 'd 'm",
        "clitic 's 're 've 'll 'd 'm",
        "other",
        "clitic 's 're 've 'll 'd 'm",
        "other",  # a stem ends in a letter
        "other",  # an id the vocabulary lacks
    ]


# The contraction groups as first written: regular expressions over every row's decoded token
# and next token (the `tokens` view). The store classifies each vocabulary entry once instead.
_APOS = "[''’]"
CONTRACTION_PER_ROW = f"""CASE
    WHEN regexp_matches(token, '^{_APOS}t$', 'i') THEN 'clitic ''t'
    WHEN regexp_matches(token, '^{_APOS}(s|re|ve|ll|d|m)$', 'i') THEN 'clitic ''s ''re ''ve ''ll ''d ''m'
    WHEN regexp_matches(next_token, '^{_APOS}t$', 'i') AND regexp_matches(token, 'n$', 'i')
        THEN 'stem before ''t'
    WHEN regexp_matches(next_token, '^{_APOS}(s|re|ve|ll|d|m)$', 'i') AND regexp_matches(token, '[a-z]$', 'i')
        THEN 'stem before ''s ''re ''ve ''ll ''d ''m'
    ELSE 'other' END"""


def test_contraction_groups_of_stored_rows_match_the_per_row_expressions(db):
    con, eid, _ = db
    g = q.GROUPS["contraction"]
    got = con.execute(
        f"SELECT idx, doc_id, {g} AS grp FROM {groups._rows(g)} WHERE eval_id = $e ORDER BY doc_id, idx",
        {"e": eid},
    ).df()
    ref = con.execute(
        f"SELECT idx, doc_id, {CONTRACTION_PER_ROW} AS grp FROM tokens WHERE eval_id = ? "
        "ORDER BY doc_id, idx",
        [eid],
    ).df()
    pd.testing.assert_frame_equal(got, ref)
    assert ref["grp"].nunique() >= 3  # the fixture's text has contractions of both kinds


def test_bootstrap_streams_are_per_group_and_per_run():
    hist = pd.DataFrame(
        {"grp": ["A"] * 3 + ["B"] * 2, "bin": [0.0, 1, 2, 0, 1], "n": [5, 3, 2, 4, 4],
         "v": [0.0, 0.01, 0.02, 0.0, 0.01]}
    )  # fmt: skip
    both, alone = q.group_boots(hist, 200), q.group_boots(hist[hist["grp"] == "B"], 200)
    # a group's draws do not depend on which other groups are present, nor on thread timing
    np.testing.assert_array_equal(both["B"], alone["B"])
    np.testing.assert_array_equal(both["A"], q.group_boots(hist, 200)["A"])
    assert not np.array_equal(both["A"], q.group_boots(hist, 200, seed=1)["A"])
    # unpaired: the two runs are resampled independently, so equal runs still differ per draw
    diff = q.diff_boots(None, hist, hist, 200)
    assert set(diff) == {"A", "B"} and np.std(diff["A"]) > 0


def test_contrast_and_compare_runs(db):
    con, eid, shifted = db
    c = q.contrast(con, eid, "tag", "NN", "NNS", n_boot=300).iloc[0]
    assert c["ci_low"] <= c["diff"] <= c["ci_high"] and c["diff"] == pytest.approx(
        c["mean_b"] - c["mean_a"]
    )
    with pytest.raises(StoreError, match="no tokens in group 'XYZ'"):
        q.contrast(con, eid, "tag", "NN", "XYZ")
    cmp = q.compare_runs(con, eid, shifted, "upos", min_count=20, n_boot=300)
    assert len(cmp) > 5
    # sums of float32 terms: one more pause is 1 to within float32 rounding
    np.testing.assert_allclose(cmp["diff"], 1, rtol=1e-6)
    assert cmp["paired"].all()  # same tokens: per-token differences, all 1
    np.testing.assert_allclose(cmp[["ci_low", "ci_high"]], 1, rtol=1e-6)
    assert (cmp["cohens_d"] > 0).all()
    cut = q.compare_runs(
        con, eid, "cut:fixture/heldout.c1500:dense", "upos", min_count=20, n_boot=300
    )
    assert not cut["paired"].any() and ((cut["ci_low"] < 1) & (cut["ci_high"] > 1)).all()
    assert ((cut["ci_low"] > 0.7) & (cut["diff"] > 0.95)).all()


def average_rank(x):
    return pd.Series(x).rank(method="average").to_numpy()


def test_calibration_is_spearman_per_step(db, rows):
    con, eid, _ = db
    cal = q.calibration(con, eid)
    assert cal["step"].tolist() == [0, 1]
    dk, t = np.stack(rows["dk"].to_numpy()), np.stack(rows["t"].to_numpy())
    for i in (0, 1):
        x, y = dk[:, i], t[:, i + 1] - t[:, i]
        ref = np.corrcoef(average_rank(x), average_rank(y))[0, 1]
        assert cal.loc[i, "spearman"] == pytest.approx(ref, abs=1e-9)
        assert cal.loc[i, "n"] == len(rows)
    dens = q.calibration_density(con, eid, step=1, bins=10)
    assert (
        dens["n"].sum() == len(rows)
        and dens["d"].between(0, 1).all()
        and dens["gain"].between(-1, 1).all()
    )
    with pytest.raises(StoreError, match="step must be in 0..1"):
        q.calibration_density(con, eid, step=2)


def test_latency_distributions(db, rows):
    con, eid, _ = db
    h = q.pause_histogram(con, eid, "expected", bins=6)
    assert h["n"].sum() == len(rows) and h["fraction"].sum() == pytest.approx(1)
    assert h["lo"].min() == 0 and h["hi"].max() <= 2 + 1e-9
    g = q.pause_histogram(con, eid, "greedy")
    assert g.set_index("lo")["n"].to_dict() == rows["greedy_pauses"].value_counts().to_dict()
    sd = q.step_distribution(con, eid)
    assert sd["pauses"].tolist() == [0, 1, 2] and sd["mean_s"].sum() == pytest.approx(1)
    np.testing.assert_allclose(sd["mean_s"], np.stack(rows["s"].to_numpy()).mean(0), rtol=1e-9)


def test_runs_curves_and_kwic(db, rows):
    con, eid, shifted = db
    s = q.run_summary(con).set_index("eval_id")
    assert set(s.index) == {eid, shifted, "cut:fixture/heldout.c1500:dense"}
    assert s.loc[eid, "ppl"] == pytest.approx(math.exp(rows["nll"].mean()))
    assert s.loc[shifted, "mean_expected_pauses"] == pytest.approx(
        rows["expected_pauses"].mean() + 1
    )
    assert s.loc[eid, "accuracy"] == pytest.approx(rows["correct"].mean())
    curves = q.training_curves(con, ["tiny-cyb"])
    assert curves["step"].tolist() == [1, 2, 3, 4] and (curves["variant"] == "cyb-ap").all()
    with pytest.raises(StoreError, match="unknown run id"):
        q.training_curves(con, ["ghost"])
    k = q.kwic(con, eid, token="the", width=15)
    assert len(k) == (rows["token"].str.strip() == "the").sum() > 0
    assert (k["token_text"].str.strip() == "the").all() and (
        k["left_context"].str.len() <= 15
    ).all()
    first = k.iloc[0]
    assert (
        first["expected_pauses"]
        == rows.set_index(["doc_id", "idx"]).loc[(first["doc_id"], first["idx"]), "expected_pauses"]
    )
    tid = int(rows.loc[rows["token"].str.strip() == "the", "token_id"].iloc[0])
    assert len(q.kwic(con, eid, token_id=tid)) == (rows["token_id"] == tid).sum()
    with pytest.raises(StoreError, match="no evaluation"):
        q.kwic(con, "ghost:x:dense", token="the")


def test_token_histogram_is_the_pause_histogram_of_one_type(db, rows):
    con, eid, _ = db
    the = rows[rows["token"].str.strip() == "the"]
    g = q.pause_histogram(con, eid, "greedy", token=" the ")  # surrounding spaces ignored
    assert g.set_index("lo")["n"].to_dict() == the["greedy_pauses"].value_counts().to_dict()
    h = q.pause_histogram(con, eid, "expected", bins=6, token="the")
    assert h["n"].sum() == len(the) > 0 and h["fraction"].sum() == pytest.approx(1)
    ref = np.minimum(np.floor(the["expected_pauses"] / (2 / 6)), 5).value_counts()
    assert dict(zip(np.round(h["lo"] / (2 / 6)), h["n"], strict=True)) == ref.to_dict()
    assert q.pause_histogram(con, eid, "greedy", token="'; DROP TABLE tokens; --").empty


def test_documents_and_doc_page(db, rows):
    con, eid, _ = db
    docs = text_q.documents(con, eid)
    ref = rows.groupby("doc_id").size()
    assert docs["doc_id"].tolist() == sorted(ref.index)
    assert docs.set_index("doc_id")["n_tokens"].to_dict() == ref.to_dict()
    doc = docs["doc_id"].iloc[0]
    text = con.execute(
        "SELECT text FROM docs WHERE eval_id = ? AND doc_id = ?", [eid, doc]
    ).fetchall()[0][0]
    r = rows[rows["doc_id"] == doc].sort_values("idx").reset_index(drop=True)
    nxt = r["char_start"].shift(-1)
    gap = [
        text[e:n] if n > e else ""
        for e, n in zip(r["char_end"], nxt.fillna(-1).astype(int), strict=True)
    ]
    for start, n in ((0, 5), (7, 4), (len(r) - 2, 10)):
        page = text_q.doc_page(con, eid, doc, start, n)
        want = r.iloc[start : start + n]
        assert page["idx"].tolist() == want["idx"].tolist()
        assert page["piece"].tolist() == [
            text[a:b] for a, b in zip(want["char_start"], want["char_end"], strict=True)
        ]
        assert page["gap"].tolist() == gap[start : start + n]
        prev = r["expected_pauses"].shift(1).iloc[start : start + n]
        np.testing.assert_allclose(page["prev_expected_pauses"].astype(float), prev, rtol=1e-12)
        prev_token = r["token"].shift(1).iloc[start : start + n]
        assert page["prev_token"].tolist()[1:] == prev_token.tolist()[1:]
    assert text_q.doc_page(con, eid, doc, 0, 5)["prev_token"].isna().iloc[0]
    with pytest.raises(StoreError, match="no evaluation"):
        text_q.documents(con, "ghost:x:dense")


def test_run_rows(db):
    con, _, _ = db
    runs = q.run_rows(con).set_index("run_id")
    assert sorted(runs.index) == sorted(q.run_summary(con)["run_id"])
    assert runs.loc["shifted", "run_status"] == "checkpoint"
    assert json.loads(runs.loc["shifted", "params"]) == {}


def test_adaptive_measure_uses_observed_pauses(tmp_path):
    result, tables = synthetic_tables(adaptive=True)
    path = tmp_path / "a.duckdb"
    eid = store.write_eval(
        path,
        run=RUN,
        eval_row={"run_id": "synthetic", "dataset": "syn", "mode": "adaptive"},
        **tables,
    )
    with store.reading(path) as con:
        h = q.pause_histogram(con, eid, "observed")
        assert h.set_index("lo")["n"].to_dict() == pd.Series(result.pauses).value_counts().to_dict()
        assert q.step_distribution(con, eid)["mean_s"].tolist() == pytest.approx(
            np.bincount(result.pauses, minlength=3) / len(result.pauses)
        )
        cal = q.calibration(con, eid)  # only the steps actually taken enter
        assert cal.loc[0, "n"] == (result.pauses >= 1).sum()


def test_queries_bind_values(db):
    con, eid, _ = db
    assert q.kwic(con, eid, token="'; DROP TABLE tokens; --").empty
    assert con.execute("SELECT count(*) FROM tokens").fetchall()[0][0] > 0
    with pytest.raises(StoreError, match="group by one of"):
        q.pause_rates(con, eid, by="upos; DROP TABLE tokens")


# ----------------------------------------------------------------------------- token classes


def _class_of(idx: np.ndarray) -> np.ndarray:
    """The classes the `classed` fixture gives its rows, by position: idx % 5 == 0 answer,
    1 or 2 synthetic, else natural (the fixture text itself is natural only)."""
    return np.where(idx % 5 == 0, "answer", np.where(idx % 5 < 3, "synthetic", "natural"))


@pytest.fixture(scope="module")
def classed():
    """The fixture evaluation under run "classed" with token classes set by _class_of, and a
    copy, "classed-shifted", with one more pause (same tokens: paired comparisons)."""
    src, _, summary = fixture_db()
    path = scratch() / "classed.duckdb"
    with store.reading(src) as con:
        tables = {
            t: con.sql(
                f"SELECT * EXCLUDE (eval_id) FROM {t} WHERE eval_id = ?",
                params=[summary["eval_id"]],
            ).to_arrow_table()
            for t in ("tokens", "docs", "words")
        }
    tok = tables["tokens"]
    cls = pa.array(_class_of(tok["idx"].to_numpy()))
    tok = tok.set_column(tok.schema.get_field_index("token_class"), "token_class", cls)
    run = {"variant": "cyb-ap", "recipe": "constant", "status": "checkpoint"}
    ids = []
    for name, rows, w in (("classed", tok, 3), ("classed-shifted", one_more_pause(tok), 4)):
        ids.append(
            store.write_eval(
                path,
                run={**run, "run_id": name, "w_max": w},
                eval_row={"run_id": name, "dataset": "classed", "mode": "dense"},
                **{**tables, "tokens": rows},
            )
        )
    with store.reading(path) as con:
        yield con, *ids


@pytest.fixture(scope="module")
def classed_rows(classed):
    con, eid, _ = classed
    rows = token_rows(con, eid)
    assert (rows["token_class"] == _class_of(rows["idx"].to_numpy())).all()
    return rows


CLASSES = ["answer", "synthetic", "natural"]


@pytest.mark.parametrize("cls", CLASSES)
def test_token_stats_and_quadrants_of_one_class(classed, classed_rows, cls):
    con, eid, _ = classed
    sub = classed_rows[classed_rows["token_class"] == cls]
    st = q.token_stats(con, eid, "expected", min_count=3, token_class=cls).set_index("token_id")
    ref = sub.groupby("token_id")["expected_pauses"].agg(["size", "mean", "median", "var"])
    ref = ref[ref["size"] >= 3]
    assert len(ref) > 3 and sorted(st.index) == sorted(ref.index)
    np.testing.assert_array_equal(st.loc[ref.index, "n"], ref["size"])
    for a, b in (("mean", "mean"), ("median", "median"), ("variance", "var")):
        np.testing.assert_allclose(st.loc[ref.index, a], ref[b], rtol=1e-9, atol=1e-12)
    quad = q.token_quadrants(con, eid, "expected", min_count=3, top=100, token_class=cls)
    assert quad["median_threshold"].iloc[0] == pytest.approx(ref["median"].median())
    assert sorted(quad["token_id"]) == sorted(ref.index)  # top=100: every type is in a corner


def test_no_class_means_every_row(classed, classed_rows):
    con, eid, _ = classed
    assert q.token_stats(con, eid, min_count=1)["n"].sum() == len(classed_rows)
    parts = [q.token_stats(con, eid, min_count=1, token_class=c)["n"].sum() for c in CLASSES]
    assert sum(parts) == len(classed_rows) and min(parts) > 0
    pd.testing.assert_frame_equal(
        q.step_distribution(con, eid), q.step_distribution(con, eid, token_class=None)
    )


@pytest.mark.parametrize("cls", CLASSES)
def test_groups_and_contrasts_of_one_class(classed, classed_rows, cls):
    con, eid, shifted = classed
    sub = classed_rows[classed_rows["token_class"] == cls]
    r = q.pause_rates(con, eid, "upos", n_boot=200, token_class=cls).set_index("upos")
    ref = sub.dropna(subset=["upos"]).groupby("upos")["expected_pauses"].agg(["size", "mean"])
    np.testing.assert_array_equal(r.loc[ref.index, "n"], ref["size"])
    np.testing.assert_allclose(r.loc[ref.index, "mean"], ref["mean"], rtol=1e-9)
    a, b = ref.sort_values("size").index[-2:]
    c = q.contrast(con, eid, "upos", a, b, n_boot=200, token_class=cls).iloc[0]
    assert (c["n_a"], c["n_b"]) == (ref.loc[a, "size"], ref.loc[b, "size"])
    assert c["diff"] == pytest.approx(ref.loc[b, "mean"] - ref.loc[a, "mean"])
    cmp = q.compare_runs(con, eid, shifted, "upos", min_count=5, n_boot=200, token_class=cls)
    big = ref[ref["size"] >= 5]
    assert sorted(cmp["upos"]) == sorted(big.index) and cmp["paired"].all()
    np.testing.assert_array_equal(cmp.set_index("upos").loc[big.index, "n_a"], big["size"])
    np.testing.assert_allclose(cmp[["diff", "ci_low", "ci_high"]], 1, rtol=1e-6)  # float32


@pytest.mark.parametrize("cls", CLASSES)
def test_latency_and_kwic_of_one_class(classed, classed_rows, cls):
    con, eid, _ = classed
    sub = classed_rows[classed_rows["token_class"] == cls]
    g = q.pause_histogram(con, eid, "greedy", token_class=cls)
    assert g.set_index("lo")["n"].to_dict() == sub["greedy_pauses"].value_counts().to_dict()
    sd = q.step_distribution(con, eid, token_class=cls)
    np.testing.assert_allclose(sd["mean_s"], np.stack(sub["s"].to_numpy()).mean(0), rtol=1e-9)
    the = sub[sub["token"].str.strip() == "the"]
    h = q.pause_histogram(con, eid, "greedy", token="the", token_class=cls)
    assert h["n"].sum() == len(the) > 0
    k = q.kwic(con, eid, token="the", token_class=cls)
    assert sorted(zip(k["doc_id"], k["idx"], strict=True)) == sorted(
        zip(the["doc_id"], the["idx"], strict=True)
    )


def test_table3_of_one_class(classed, classed_rows):
    con, eid, _ = classed
    from analysis import export

    md = export.table3(con, eid, "markdown", min_count=3, token_class="answer")
    assert "rows predicting answer tokens" in md
    assert md != export.table3(con, eid, "markdown", min_count=3)


def test_eval_classes_counts_and_answer_pauses(classed, classed_rows):
    con, eid, shifted = classed
    ec = q.eval_classes(con).set_index("eval_id")
    assert sorted(ec.index) == sorted([eid, shifted])
    row, rows = ec.loc[eid], classed_rows
    for c in CLASSES:
        assert row[f"n_{c}"] == (rows["token_class"] == c).sum()
    assert row["n_unclassed"] == 0 and row["w_max"] == 3 and row["variant"] == "cyb-ap"
    ans = rows["token_class"] == "answer"
    assert row["answer_pauses"] == pytest.approx(rows.loc[ans, "expected_pauses"].mean())
    assert row["other_pauses"] == pytest.approx(rows.loc[~ans, "expected_pauses"].mean())
    assert row["answer_pause_rate"] == pytest.approx((rows.loc[ans, "greedy_pauses"] > 0).mean())
    assert ec.loc[shifted, "answer_pauses"] == pytest.approx(row["answer_pauses"] + 1)


def test_token_class_is_checked_and_bound(classed):
    con, eid, _ = classed
    for bad in ("Answer", "answer' OR '1'='1"):
        with pytest.raises(StoreError, match="token class must be one of"):
            q.token_stats(con, eid, token_class=bad)
    assert "$cls" in q.CLASS and "'" not in q.CLASS


# the quadrants as one SQL query over the rows: the slow, obviously correct reference
_QUADRANTS_SQL = """WITH st AS (
        SELECT token_id, count(*) AS n, avg({x}) AS mean, median({x}) AS median,
               coalesce(var_samp({x}), 0) AS variance
        FROM token_rows WHERE eval_id = $e AND {x} IS NOT NULL
             AND ($cls::VARCHAR IS NULL OR token_class = $cls::VARCHAR)
        GROUP BY token_id HAVING count(*) >= $min),
    th AS (SELECT median(median) AS mt, median(variance) AS vt FROM st),
    q AS (SELECT st.*, th.*,
                 CASE WHEN median <= mt THEN 'low' ELSE 'high' END AS median_level,
                 CASE WHEN variance <= vt THEN 'low' ELSE 'high' END AS variance_level,
                 abs(percent_rank() OVER (ORDER BY median) - 0.5)
                   + abs(percent_rank() OVER (ORDER BY variance) - 0.5) AS corner
          FROM st, th)
    SELECT median_level, variance_level, row_number() OVER w AS rank, token_id, mt, vt
    FROM q WINDOW w AS (PARTITION BY median_level, variance_level
                        ORDER BY corner DESC, n DESC, token_id)
    QUALIFY rank <= $top ORDER BY median_level DESC, variance_level DESC, rank"""


@pytest.mark.parametrize("measure", ["expected", "greedy"])
@pytest.mark.parametrize("cls", [None, *CLASSES])
@pytest.mark.parametrize("min_count,top", [(1, 5), (3, 100), (8, 3)])
def test_quadrants_from_stats_match_the_sql_reference(classed, measure, cls, min_count, top):
    con, eid, _ = classed
    got = q.token_quadrants(con, eid, measure, min_count, top, cls)
    ref = con.execute(
        _QUADRANTS_SQL.format(x=q.MEASURES[measure]),
        {"e": eid, "cls": cls, "min": min_count, "top": top},
    ).df()
    assert len(ref) > 0
    cols = ["median_level", "variance_level", "rank", "token_id"]
    pd.testing.assert_frame_equal(
        got[cols].astype({"rank": "int64", "token_id": "int64"}),
        ref[cols].astype({"rank": "int64", "token_id": "int64"}),
    )
    assert got["median_threshold"].iloc[0] == pytest.approx(ref["mt"].iloc[0], rel=1e-6)
    assert got["variance_threshold"].iloc[0] == pytest.approx(ref["vt"].iloc[0], rel=1e-6)


@pytest.mark.parametrize("w", [1, 2, 4])
def test_the_fast_expected_pauses_equal_the_stored_column(w):
    """groups._measure's constant-list product against the schema's virtual column, on rows
    of the evaluation's W, of another length (the fallback) and without s."""
    from analysis import groups, schema

    con = duckdb.connect()
    schema.apply_schema(con)
    rng = np.random.default_rng(w)
    rows = [rng.dirichlet(np.ones(k)).astype(np.float32).tolist() for k in (w, w, 3, 1)]
    for i, s in enumerate([*rows, None]):
        con.execute("INSERT INTO token_rows (eval_id, idx, s) VALUES ('e', ?, ?)", [i, s])
    x = groups._measure({"eval_id": "e", "mode": "dense", "w_max": w}, "expected")
    got = con.execute(
        f"SELECT {x}, expected_pauses::DOUBLE FROM token_rows ORDER BY idx"
    ).fetchall()
    assert [a for a, _ in got] == [b for _, b in got] and got[-1] == (None, None)


@pytest.fixture(scope="module")
def classed_large(classed):
    """A copy of `classed` whose two evaluations have their statistics stored, as evaluations
    of large_summaries.LARGE rows or more have (the rows are left as they are)."""
    from analysis import large_summaries

    src = (
        classed[0]
        .execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
        .fetchall()[0][0]
    )
    path = scratch() / "classed-large.duckdb"
    shutil.copy(src, path)
    large, large_summaries.LARGE = large_summaries.LARGE, 0
    try:
        with store.connect_write(path) as con:
            for (eid,) in con.execute("SELECT eval_id FROM evals").fetchall():
                large_summaries.write(con, eid)
    finally:
        large_summaries.LARGE = large
    with store.reading(path) as con:
        yield con, path


@pytest.mark.parametrize("measure", ["expected", "greedy"])
@pytest.mark.parametrize("cls", [None, *CLASSES])
def test_stored_type_and_group_statistics_equal_the_rows(classed, classed_large, measure, cls):
    """The stored path (large evaluations) against the row aggregation (the reference)."""
    con, eid, other = classed
    big, _ = classed_large
    for e in (eid, other):
        pd.testing.assert_frame_equal(
            q.token_stats(big, e, measure, 1, cls), q.token_stats(con, e, measure, 1, cls)
        )
        for by in q.GROUPS:
            for stored, rows in zip(
                q.group_summary(big, e, by, measure, cls),
                q.group_summary(con, e, by, measure, cls),
                strict=True,
            ):
                assert len(rows) > 0
                pd.testing.assert_frame_equal(stored, rows, check_exact=False, rtol=1e-12)
    got = q.compare_runs(big, eid, other, "upos", measure, 1, n_boot=200, token_class=cls)
    want = q.compare_runs(con, eid, other, "upos", measure, 1, n_boot=200, token_class=cls)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9)


def test_small_evaluations_store_no_statistics_and_the_upgrade_adds_them(
    classed, classed_large, tmp_path
):
    from analysis import large_summaries, schema

    con, eid, _ = classed
    big, path = classed_large
    for table in large_summaries.TABLES:  # written as usual, the fixture's are small: none
        assert not large_summaries.stored(con, table, eid) and large_summaries.stored(
            big, table, eid
        )
    old = tmp_path / "v4.duckdb"
    shutil.copy(path, old)
    with duckdb.connect(str(old)) as c:  # as stored by version 4
        c.execute("DROP TABLE type_stats; DROP TABLE group_stats; DROP TABLE group_hist")
        c.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    large, large_summaries.LARGE = large_summaries.LARGE, 0
    try:
        store.upgrade(old)
    finally:
        large_summaries.LARGE = large
    with store.reading(old) as con:
        assert schema.schema_version(con) == schema.SCHEMA_VERSION
        for table in large_summaries.TABLES:
            want = big.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            assert con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() == want != []


def test_stored_medians_are_exact_in_bounded_memory():
    """large_summaries.medians against DuckDB's median(): ties, values on bin edges, groups
    of one and two rows, negative values; then over 4M rows with a memory limit that does
    not hold them (DuckDB's median() keeps every value of a group in memory)."""
    from analysis.large_summaries import medians

    con = duckdb.connect()
    rng = np.random.default_rng(0)
    n = 5000
    x = np.concatenate([rng.integers(0, 4, n) / 2, rng.normal(0, 1, n), [0.005, 0.015, -0.005]])
    k = np.concatenate([rng.integers(0, 7, n), rng.integers(7, 20, n), [20, 20, 21]])
    scope = np.where(rng.random(len(x)) < 0.5, "*", "natural")
    con.register("r", pd.DataFrame({"scope": scope, "k": k, "x": x}))
    want = "SELECT scope, k, median(x) AS median FROM r GROUP BY scope, k ORDER BY scope, k"
    got = con.execute(f"SELECT * FROM ({medians('r')}) ORDER BY scope, k").df()
    pd.testing.assert_frame_equal(got, con.execute(want).df(), check_exact=True)
    con.execute(
        "CREATE TABLE big AS SELECT '*' AS scope, (i % 2)::INTEGER AS k, "
        "(random() * 3)::FLOAT::DOUBLE AS x FROM range(4000000) t(i)"
    )
    want = con.execute("SELECT scope, k, median(x) FROM big GROUP BY ALL ORDER BY k").fetchall()
    con.execute("SET memory_limit = '48MB'")
    assert con.execute(f"SELECT * FROM ({medians('big')}) ORDER BY k").fetchall() == want
