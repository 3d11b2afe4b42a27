"""The Streamlit app: one AppTest per page against the fixture database (fixtures_app), the
empty-database state, the export callables, the chart builders and `cyb app`."""

from __future__ import annotations

import argparse
import base64
import json
import tomllib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from fixtures_app import MIXED, NATURAL, build_db, empty_db
from streamlit.testing.v1 import AppTest
from support import ROOT
from support import token_rows as token_rows_of

from analysis import classes, store, text
from app import charts, data, downloads, run_charts, state, token_html
from app.state import Filters
from cyb.commands import app as app_cli

MAIN = str(ROOT / "app" / "main.py")


@pytest.fixture(scope="session")
def db():
    return build_db()


@pytest.fixture
def app(db, monkeypatch):
    """An AppTest of the entry script over the fixture database, run once on the first page,
    then on `dataset` (None: the one the app opens on by itself, MIXED) and page `name`."""
    monkeypatch.setenv("CYB_DB", str(db[0]))

    def open_page(name: str | None = None, dataset: str | None = NATURAL) -> AppTest:
        at = AppTest.from_file(MAIN, default_timeout=60).run()
        if dataset and at.selectbox(key="f_dataset").value != dataset:
            at.selectbox(key="f_dataset").set_value(dataset).run()
        if name:
            at.switch_page(f"views/{name}.py").run()
        _ok(at)
        return at

    return open_page


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert not at.warning, [w.value for w in at.warning]


def _rerun(at: AppTest) -> AppTest:
    at.run()
    _ok(at)
    return at


def _decode(v):
    """Plotly sends numeric arrays as base64 typed arrays ({"dtype", "bdata", "shape"})."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape([int(n) for n in str(v["shape"]).split(",")]) if "shape" in v else a
    if isinstance(v, dict):
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def figures(at: AppTest) -> dict[str, dict]:
    """key -> the plotly figure (data and layout) of every chart on the page."""
    return {c.key: _decode(json.loads(c.proto.spec)) for c in at.get("plotly_chart")}


def traces(fig: dict, field: str = "x") -> list:
    return [t.get(field) for t in fig["data"]]


def html(at: AppTest) -> list[str]:
    return [h.proto.body for h in at.get("html")]


def token_rows(db, eval_id: str) -> pd.DataFrame:
    with store.reading(db[0]) as con:
        return token_rows_of(con, eval_id)


AP_MIXED = f"ap-full:{MIXED}:dense"


# ----------------------------------------------------------------------------- pages


def test_runs_page(app, db):
    at = app()  # Runs is the default page
    assert at.title[0].value == "Runs"
    figs = figures(at)
    assert set(figs) == {"frontier", "ppl_by_run", "ppl_vs_data", "training_curves"}
    # the frontier: a mean marker per arm and mode at W positions (dense: all of them)
    means = {t["name"]: t["x"] for t in figs["frontier"]["data"] if t.get("name")}
    assert means == {"ap-full dense": [4.0], "ap-half dense": [4.0], "tbys-3 dense": [4.0]}
    bars = {x for xs in traces(figs["ppl_by_run"]) for x in xs}
    assert bars == {"ap-full", "ap-half", "tbys-3"}
    # the two CYB-AP runs differ only in their data: one line through both
    assert [sorted(x) for x in traces(figs["ppl_vs_data"])] == [[4096, 8192]]
    assert {t["name"] for t in figs["training_curves"]["data"]} == {"ap-full"}
    assert len(at.dataframe[0].value) == 6  # every evaluation, both datasets
    at.selectbox(key="f_run").set_value("tbys-3")
    figs = figures(_rerun(at))
    assert {t["name"] for t in figs["training_curves"]["data"]} == {"tbys-3"}
    at.radio(key="curves_runs").set_value("all")
    assert len(figures(_rerun(at))["training_curves"]["data"]) == 4  # every run


def test_text_page(app):
    at = app("text")
    legend, text = html(at)
    assert "expected processing steps" in legend and legend.count("<span") == 4  # 1..W, W = 4
    assert text.count('class="tok"') == 400 and "d_i [" in text and "POS " in text
    assert "background:rgb" in text
    at.radio(key="text_colour").set_value("predicted")
    predicted = html(_rerun(at))[1]
    assert predicted != text and "predicted " in predicted
    side = next(s for s in at.selectbox if s.label == "Side by side with")
    side.set_value("tbys-3:fixture/heldout.d2.c3000:dense")
    _rerun(at)
    assert len(at.tabs) == 2
    bodies = html(at)
    assert sum('class="cyb-text"' in b for b in bodies) == 3  # A, B and the difference
    assert any("B minus A" in b for b in bodies)
    at.number_input(key="text_page").set_value(2)
    assert html(_rerun(at))[1] != bodies[1]
    at.selectbox(key="text_size").set_value(1600)  # one page: the page number goes back to 1
    _rerun(at)
    assert at.number_input(key="text_page").value == 1


def test_latency_page(app):
    at = app("latency")
    figs = figures(at)
    assert set(figs) == {"pause_histogram", "step_distribution"}
    assert len(figs["step_distribution"]["data"]) == 1
    assert list(traces(figs["step_distribution"])[0]) == [0, 1, 2, 3]
    at.multiselect(key="f_compare").set_value(["tbys-3"])
    figs = figures(_rerun(at))
    assert len(figs["step_distribution"]["data"]) == 2
    tbys = figs["step_distribution"]["data"][1]["y"]
    assert tbys[-1] == pytest.approx(1.0)  # TBYS always answers after all W - 1 pauses
    at.radio(key="latency_layout").set_value("facet")
    assert "xaxis2" in figures(_rerun(at))["step_distribution"]["layout"]
    assert list(at.dataframe[0].value.columns) == ["0 pauses", "1 pause", "2 pauses", "3 pauses"]


def test_tokens_page(app):
    at = app("tokens")
    figs = figures(at)
    assert {"token_quadrants", "token_histogram"} <= set(figs)
    n20 = sum(len(x) for x in traces(figs["token_quadrants"]))
    assert n20 > 0 and "Table 3" in at.markdown[0].value
    at.slider(key="f_min_count").set_value(5)
    n5 = sum(len(x) for x in traces(figures(_rerun(at))["token_quadrants"]))
    assert n5 > n20
    at.text_input(key="token_search").set_value("the")
    _rerun(at)
    assert "'the'" in figures(at)["token_histogram"]["layout"]["title"]["text"]
    kwic = at.dataframe[-1].value  # the keyword-in-context table comes last
    assert len(kwic) > 0 and set(kwic["token_text"].str.strip()) == {"the"}


def test_linguistics_page(app):
    at = app("linguistics")
    figs = figures(at)
    assert set(figs) == {"pause_rates"}
    upos = set(traces(figs["pause_rates"], "y")[0])
    assert {"NOUN", "VERB", "DET"} <= upos
    at.selectbox(key="ling_by").set_value("number")
    figs = figures(_rerun(at))
    assert set(traces(figs["pause_rates"], "y")[0]) == {"Sing", "Plur"}
    assert len(at.dataframe[-1].value) == 1  # the contrast Sing vs Plur, last on the page
    at.multiselect(key="f_compare").set_value(["ap-half"])
    figs = figures(_rerun(at))
    assert set(figs) == {"pause_rates", "run_differences"} and len(figs["pause_rates"]["data"]) == 2


def test_calibration_page(app):
    at = app("calibration")
    fig = figures(at)["calibration_density"]
    assert len(fig["data"]) == 3  # steps 0..W-2
    assert "Spearman" in fig["layout"]["annotations"][0]["text"]
    assert len(fig["data"][0]["z"]) == 40
    at.select_slider(key="cal_bins").set_value(20)
    fig = figures(_rerun(at))["calibration_density"]
    assert len(fig["data"][0]["z"]) == 20
    at.multiselect(key="f_compare").set_value(["ap-half", "tbys-3"])
    assert len(figures(_rerun(at))["calibration_density"]["data"]) == 9


def test_export_page(app):
    at = app("export")
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"CSV", "PARQUET", "HTML", "CoNLL-U with pauses", "Table 3 (LaTeX)"} <= set(labels)
    n_tables = labels.count("CSV")
    at.multiselect(key="f_compare").set_value(["tbys-3"])
    labels = [b.proto.label for b in _rerun(at).get("download_button")]
    assert labels.count("CSV") == n_tables + 1  # the run comparison table


def test_filters_persist_across_pages(app):
    at = app("tokens")
    at.slider(key="f_min_count").set_value(7)
    at.multiselect(key="f_compare").set_value(["tbys-3"])
    _rerun(at)
    at.switch_page("views/latency.py")
    _rerun(at)
    at.switch_page("views/tokens.py")
    _rerun(at)
    assert at.slider(key="f_min_count").value == 7
    assert at.multiselect(key="f_compare").value == ["tbys-3"]
    assert "at least 7 occurrences" in at.caption[0].value


# ----------------------------------------------------------------------------- where waiting pays


def test_app_opens_on_the_run_that_waits_on_answers(app, db):
    at = app(dataset=None)
    # the dataset with answer tokens, and its one model that chooses its pauses: not the
    # baseline (W = 1) nor TBYS (always all pauses)
    assert at.selectbox(key="f_dataset").value == MIXED
    assert at.radio(key="f_mode").value == "dense"
    assert at.selectbox(key="f_run").value == "ap-full"
    assert "see Classes" in at.get("page_link")[0].proto.label
    ec = data.eval_classes(data.source(db[0]))
    assert state.opening(ec) == state.Opening(MIXED, "dense", "ap-full")
    at.selectbox(key="f_run").set_value("base")  # later choices win over the opening
    assert _rerun(at).selectbox(key="f_run").value == "base"
    at.switch_page("views/latency.py")
    assert _rerun(at).selectbox(key="f_run").value == "base"


def test_opening_prefers_the_model_that_waits_most_on_answers():
    def ev(eval_id, dataset, variant, w, answer, other, n_answer=10):
        return dict(eval_id=eval_id, run_id=eval_id, dataset=dataset, mode="dense",
                    variant=variant, w_max=w, n_answer=n_answer, answer_pauses=answer,
                    other_pauses=other, answer_pause_rate=0.5)  # fmt: skip

    rows = [
        ev("nat", "a-natural", "cyb-ap", 4, None, 2.0, n_answer=0),
        ev("tbys", "mix", "tbys", 4, 3.0, 0.0),  # waits most, but it is made to
        ev("control", "mix", "control", 4, 3.0, 0.0),
        ev("base", "mix", "baseline", 1, 0.0, 0.0),
        ev("va", "mix", "cyb-va", 4, 1.0, 0.2),  # 0.8 more pauses on answers
        ev("ap", "mix", "cyb-ap", 4, 2.0, 1.5),  # more pauses, but only 0.5 more on answers
    ]
    assert state.opening(pd.DataFrame(rows)) == state.Opening("mix", "dense", "va")
    assert state.opening(pd.DataFrame(rows[:4])) == state.Opening("mix")  # no model that chooses
    assert state.opening(pd.DataFrame(rows[:1])) is None  # no answers anywhere: plain default


def test_class_filter_changes_the_tokens_page(app, db):
    natural = app("tokens")
    assert "f_class" not in [s.key for s in natural.selectbox]  # natural text only: no filter
    at = app("tokens", dataset=MIXED)
    assert at.selectbox(key="f_class").value == "all"
    assert at.selectbox(key="f_class").options == list(state.CLASS_LABELS.values())
    at.slider(key="f_min_count").set_value(2)
    _rerun(at)
    rows = token_rows(db, AP_MIXED)

    def types(cls: str | None) -> pd.Series:
        sub = rows if cls is None else rows[rows["token_class"] == cls]
        n = sub.groupby("token_id").size()
        return n[n >= 2]

    for cls in (None, "answer", "natural"):
        if cls:
            at.selectbox(key="f_class").set_value(cls)
            _rerun(at)
        want = types(cls)
        assert at.subheader[0].value == f"{len(want):,} token types"
        assert sum(len(x) for x in traces(figures(at)["token_quadrants"])) == len(want)
        shown = at.dataframe[0].value  # the first page of the token-type table
        top = want.reset_index(name="n").sort_values(["n", "token_id"], ascending=[False, True])
        assert shown["token_id"].tolist() == top["token_id"].head(len(shown)).tolist()
        assert shown["n"].tolist() == top["n"].head(len(shown)).tolist()
    assert "Only rows that predict natural text" in at.caption[0].value
    assert len(types("answer")) < len(types(None))


def test_class_filter_on_latency_and_linguistics(app, db):
    at = app("latency", dataset=MIXED)
    at.selectbox(key="f_class").set_value("answer")
    _rerun(at)
    rows = token_rows(db, AP_MIXED)
    answers = rows[rows["token_class"] == "answer"]
    got = figures(at)["step_distribution"]["data"][0]["y"]
    np.testing.assert_allclose(got, np.stack(answers["s"].to_numpy()).mean(0), rtol=1e-9)
    at.switch_page("views/linguistics.py")
    _rerun(at)
    fig = figures(at)["pause_rates"]["data"][0]
    ref = answers.dropna(subset=["upos"]).groupby("upos")["expected_pauses"].mean()
    np.testing.assert_allclose(fig["x"], ref.loc[list(fig["y"])], rtol=1e-9)


def test_classes_page(app, db):
    at = app("classes", dataset=None)
    rows = token_rows(db, AP_MIXED)
    t = np.stack(rows["t"].to_numpy())
    ref = (
        rows.assign(gain=np.log(t[:, -1]) - np.log(t[:, 0]), paused=rows["greedy_pauses"] > 0)
        .groupby("token_class")
        .agg(n=("nll", "size"), nll=("nll", "mean"), accuracy=("correct", "mean"),
             expected_pauses=("expected_pauses", "mean"), pause_rate=("paused", "mean"),
             log_gain_last=("gain", "mean"))
    )  # fmt: skip
    table = at.dataframe[0].value.set_index("token_class")
    assert table.index.tolist() == ["answer", "synthetic", "natural"]
    for col in ref.columns:
        np.testing.assert_allclose(table[col].astype(float), ref.loc[table.index, col], rtol=1e-9)
    ans = rows["token_class"] == "answer"
    headline = [m.value for m in at.metric]
    assert headline[0] == f"{rows.loc[ans, 'expected_pauses'].mean():.3f}"
    assert headline[2] == f"{ref.loc['answer', 'log_gain_last']:.3f}"
    bars = figures(at)["class_bars"]["data"]
    assert len(bars) == 2 and {b["marker"]["color"] for b in bars} == {
        charts.VARIANT_COLORS["cyb-ap"]
    }
    assert list(bars[0]["x"]) == ["answer", "synthetic", "natural"]
    np.testing.assert_allclose(bars[1]["y"], ref.loc[list(bars[1]["x"]), "nll"], rtol=1e-9)
    with store.reading(db[0]) as con:
        calib = classes.class_calibration(con, AP_MIXED)
    partial = at.dataframe[1].value
    assert partial.columns.tolist() == ["run", "token_class", "step 0", "step 1", "step 2"]
    want = calib.pivot(index="token_class", columns="step", values="partial_spearman")
    got = partial.set_index("token_class")[["step 0", "step 1", "step 2"]].to_numpy(float)
    np.testing.assert_allclose(got, want.loc[partial["token_class"]].to_numpy(float), rtol=1e-9)

    at.multiselect(key="f_compare").set_value(["tbys-3", "base"])
    _rerun(at)
    assert len(at.dataframe[0].value) == 9  # three runs x three classes
    bars = figures(at)["class_bars"]["data"]
    colors = {b["name"]: b["marker"]["color"] for b in bars}
    assert colors == {
        f"{r} ({v}, W={w})": charts.VARIANT_COLORS[v]
        for r, v, w in (("ap-full", "cyb-ap", 4), ("tbys-3", "tbys", 4), ("base", "baseline", 1))
    }
    assert len(at.dataframe[1].value) == 6  # partial Spearman: the two runs with pauses

    natural = app("classes")
    assert "no synthetic lines" in natural.info[0].value and not natural.dataframe


def test_nll_gain_colours_a_page_by_one_run_minus_another(db):
    base, ap = f"base:{MIXED}:dense", AP_MIXED
    with store.reading(db[0]) as con:
        doc = text.documents(con, ap)["doc_id"].iloc[0]
        rows = text.doc_page(con, ap, doc, 0, 50)
        g = text.nll_gain(con, base, ap, doc, 0, 50)
        a, b = (token_rows_of(con, e) for e in (base, ap))
    want = (
        a[a["doc_id"] == doc].set_index("idx")["nll"]
        - b[b["doc_id"] == doc].set_index("idx")["nll"]
    )
    assert len(g) == 50
    np.testing.assert_allclose(g["gain"], want.loc[g["idx"]].to_numpy())
    out = token_html.gain_html(rows, g, 2.0, ("base", "ap"))
    assert out.count('class="tok"') == 50 and "gain " in out and "pauses here" in out


def test_text_page_opens_on_a_synthetic_document(app):
    at = app("text", dataset=None)
    assert at.selectbox(key="text_doc").value == "synthetic/heldout-00000"
    assert "=</span>" in html(at)[1] and "+</span>" in html(at)[1]
    assert app("text").selectbox(key="text_doc").value == "brown/ca03"  # natural text only
    assert data.first_doc(["brown/a", "synthetic/x", "synthetic/y"]) == 1
    assert data.first_doc(["brown/a"]) == 0 and data.first_doc([]) == 0


def test_the_local_app_has_no_deploy_button(monkeypatch):
    path = ROOT / "app" / ".streamlit" / "config.toml"
    assert tomllib.loads(path.read_text())["client"]["toolbarMode"] == "viewer"
    from streamlit import config  # read as the entry script's own config, from any directory

    monkeypatch.setattr(config, "_main_script_path", MAIN)
    assert str(path) in config.get_config_files("config.toml")


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_no_evaluations_shows_how_to_create_one(kind, tmp_path, monkeypatch):
    path = tmp_path / "none.duckdb" if kind == "missing" else empty_db(tmp_path)
    monkeypatch.setenv("CYB_DB", str(path))
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    assert not at.exception
    assert "no evaluations yet" in at.title[0].value
    assert ("no database" if kind == "missing" else "holds no evaluation") in at.info[0].value
    assert f"cyb eval runs/cyb-ap --split heldout --db {path}" in at.code[0].value


def test_unreadable_database_is_explained(tmp_path, monkeypatch):
    import duckdb

    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    monkeypatch.setenv("CYB_DB", str(path))
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    assert not at.exception
    assert "unavailable" in at.title[0].value and "not a cyb database" in at.warning[0].value


# ----------------------------------------------------------------------------- downloads, charts


def test_export_callables_build_files(db):
    path, ids = db
    src = data.source(path)
    labels = {e: e.split(":")[0] for e in ids}
    f = Filters(
        src=src,
        dataset=ids[0].split(":")[1],
        mode="dense",
        run="ap-full",
        eval_id=ids[0],
        w=4,
        compare=(ids[2],),
        measure="expected",
        min_count=5,
        labels=labels,
        ws=dict.fromkeys(ids, 4),
    )
    opts = downloads.Options(by="tag", token="the")
    for name, make in downloads.tables(f, opts).items():
        df = make()
        assert isinstance(df, pd.DataFrame) and len(df), name
        assert downloads.frame_bytes(df, "parquet")[:4] == b"PAR1"
    for name, make in downloads.figures(f, opts).items():
        fig = make()
        assert fig.data, name
        assert b"plotly" in downloads.figure_bytes(fig, "html")[:5000].lower()
    assert data.conllu(src, ids[0]).startswith(f"# cyb_eval = {ids[0]}")
    assert "\\begin{tabular}" in data.table3(src, ids[0], "latex", "expected", 5)
    assert data.raw_rows(src, ids[0], "tokens", "parquet")[:4] == b"PAR1"
    page = downloads.text_page(f, data.documents(src, ids[0])["doc_id"].iloc[0], "predicted")
    assert page.startswith(b"<!doctype html>") and page.count(b'class="tok"') > 100


def test_text_html_escapes_and_colours():
    rows = pd.DataFrame(
        {
            "idx": [0, 1],
            "token_id": [5, 6],
            "token": ["<b>", " x"],
            "next_token": [" x", "."],
            "prev_token": [None, "<b>"],
            "word": ["<b>", "x"],
            "upos": ["X", "NOUN"],
            "tag": ["XX", "NN"],
            "piece": ["<b>", " x"],
            "gap": ["", ""],
            **{
                f"{p}{k}": v
                for p in ("", "prev_")
                for k, v in {
                    "expected_pauses": [0.0, 3.0],
                    "greedy_pauses": [0, 3],
                    "pauses": [None, None],
                    "nll": [1.0, 2.0],
                    "dk": [[0.1, 0.2, 0.3]] * 2,
                    "t": [[0.1, 0.2, 0.3, 0.4]] * 2,
                    "s": [[1.0, 0, 0, 0], [0, 0, 0, 1.0]],
                }.items()
            },
        }
    )
    out = token_html.text_html(rows, 4)
    assert "<b>" not in out.replace('<span class="tok"', "") and "&lt;b&gt;" in out
    first, last = token_html.step_colors([1, 4], 4)
    assert first != last and out.count("background:") == 2
    assert token_html.text_html(rows, 4, "predicted").count("predicted ") == 2


def test_chart_builders_handle_empty_frames():
    empty = pd.DataFrame(columns=["run", "lo", "hi", "n", "fraction", "pauses", "mean_s"])
    for fig in (
        charts.pause_histogram(empty),
        charts.step_distribution(empty),
        run_charts.perplexity_by_run(pd.DataFrame()),
        run_charts.perplexity_vs_data(pd.DataFrame()),
        charts.token_quadrants(pd.DataFrame(), 0, 0),
        charts.calibration_density(pd.DataFrame(), pd.DataFrame()),
        charts.class_bars(pd.DataFrame()),
    ):
        assert isinstance(fig, go.Figure) and fig.layout.annotations


# ----------------------------------------------------------------------------- cyb app


def _parser():
    parser = argparse.ArgumentParser(prog="cyb")
    app_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_flags_and_command(monkeypatch, tmp_path, capsys):
    parser = _parser()
    sub = parser._subparsers._group_actions[0].choices["app"]
    assert all(a.help for a in sub._actions if a.dest != "help")
    args = parser.parse_args(["app", "--db", str(tmp_path / "x.duckdb"), "--port", "9123"])
    assert args.host == "127.0.0.1"
    calls = []

    class Server:  # stands in for subprocess.Popen
        def __init__(self, cmd, env):
            calls.append((cmd, env))

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(app_cli.subprocess, "Popen", Server)
    assert args.func(args) == 0
    cmd, env = calls[0]
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("app/main.py")
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags == {
        "--server.headless": "true",
        "--server.address": "127.0.0.1",
        "--server.port": "9123",
        "--browser.gatherUsageStats": "false",
        "--server.fileWatcherType": "none",
    }
    assert env["CYB_DB"] == str((tmp_path / "x.duckdb").resolve())
    out = capsys.readouterr().out
    assert "http://127.0.0.1:9123" in out and "no database there yet" in out
    with pytest.raises(SystemExit):
        parser.parse_args(["app", "--port", "70000"])


def test_export_tables_follow_the_class_filter(db):
    path, ids = db
    src = data.source(path)
    mixed = [e for e in ids if e.split(":")[1] == MIXED]
    base = dict(
        src=src,
        dataset=MIXED,
        mode="dense",
        run="ap-full",
        eval_id=mixed[0],
        w=4,
        compare=(),
        measure="expected",
        min_count=1,
        labels={},
        ws=dict.fromkeys(ids, 4),
    )
    opts = downloads.Options(by="upos", token="+")
    every = downloads.tables(Filters(**base), opts)
    answers = downloads.tables(Filters(**base, token_class="answer"), opts)
    n_all = every["token-stats"]()["n"].sum()
    n_ans = answers["token-stats"]()["n"].sum()
    with store.reading(path) as con:
        want = con.execute(
            "SELECT count(*) FROM tokens WHERE eval_id = ? AND token_class = 'answer'", [mixed[0]]
        ).fetchall()[0][0]
    assert 0 < n_ans == want < n_all
    assert "answer" in data.table3(src, mixed[0], "markdown", "expected", 1, "answer")
