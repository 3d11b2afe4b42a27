import argparse

import conllu
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support import RUN, fixture_db, synthetic_tables

from analysis import export, queries, store
from analysis.store import StoreError
from cyb.commands import eval as eval_command
from cyb.commands import export as export_command
from cyb.commands.export import KINDS
from cyb.parser import CLIError


@pytest.fixture(scope="module")
def fixture():
    db, run, summary = fixture_db()
    with store.reading(db) as con:
        yield con, summary["eval_id"], db, run


def test_query_results_and_raw_rows(fixture, tmp_path):
    con, eid, _, _ = fixture
    df = queries.token_stats(con, eid, min_count=5)
    csv = export.export_frame(df, tmp_path, "stats", "csv")
    par = export.export_frame(df, tmp_path, "stats", "parquet")
    assert csv.name == "stats.csv" and par.name == "stats.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(par), df)
    assert pd.read_csv(csv)["n"].tolist() == df["n"].tolist()
    rows = export.export_rows(con, eid, tmp_path, fmt="parquet", batch_rows=500)
    t = pq.read_table(rows)
    n = con.execute("SELECT n_tokens FROM evals WHERE eval_id = ?", [eid]).fetchall()[0][0]
    assert t.num_rows == n and len(t["s"][0].as_py()) == 3 and t["idx"].to_pylist()[:3] == [0, 1, 2]
    c = pd.read_csv(export.export_rows(con, eid, tmp_path, fmt="csv"))
    assert len(c) == n and c["dk"][0].startswith("[")
    w = pq.read_table(export.export_rows(con, eid, tmp_path, table="words"))
    assert w.num_rows == con.execute("SELECT count(*) FROM words").fetchall()[0][0]
    assert not list(tmp_path.glob(".*.part"))


def test_conllu_parses_with_an_independent_parser(fixture, tmp_path):
    con, eid, _, _ = fixture
    path = export.export_conllu(con, eid, tmp_path)
    sents = conllu.parse(path.read_text(encoding="utf-8"))
    words = con.execute("SELECT word, tag, space_after FROM words ORDER BY doc_id, widx").fetchall()
    flat = [tok for s in sents for tok in s]
    assert [t["form"] for t in flat] == [w[0] for w in words]
    assert [t["xpos"] for t in flat] == [w[1] for w in words]
    assert len({s.metadata["sent_id"] for s in sents}) == len(sents) > 20
    assert sum("newdoc id" in s.metadata for s in sents) == 5
    for s in sents:
        assert [t["id"] for t in s] == list(range(1, len(s) + 1))
        rebuilt = "".join(
            t["form"] + ("" if (t["misc"] or {}).get("SpaceAfter") == "No" else " ") for t in s
        )
        assert rebuilt.rstrip() == s.metadata["text"]
    # pause data: one value per model token starting in the word; DK has W-1 = 2 entries per token
    with_pauses = [t for t in flat if t["misc"] and "ExpPauses" in t["misc"]]
    assert len(with_pauses) > 0.95 * len(flat)
    for t in with_pauses:
        exp = [float(v) for v in t["misc"]["ExpPauses"].split(",")]
        dks = t["misc"]["DK"].split(";")
        assert len(dks) == len(exp) == int(t["misc"].get("ModelTokens", 1)) and all(
            0 <= e <= 2 for e in exp
        )
        assert all(len(d.split(",")) == 2 for d in dks)
        assert "Pauses" not in t["misc"]  # dense evaluation
    plural = next(t for t in flat if t["xpos"] == "NNS")
    assert plural["feats"]["Number"] == "Plur" and plural["upos"] == "NOUN"


def test_adaptive_conllu_has_observed_pauses(tmp_path):
    result, tables = synthetic_tables(adaptive=True)
    db = tmp_path / "a.duckdb"
    eid = store.write_eval(
        db,
        run=RUN,
        eval_row={"run_id": "synthetic", "dataset": "syn", "mode": "adaptive"},
        **tables,
    )
    with store.reading(db) as con:
        sents = conllu.parse(export.export_conllu(con, eid, tmp_path).read_text())
    misc = [t["misc"] for s in sents for t in s if t["misc"] and "Pauses" in t["misc"]]
    assert misc and all(m["Pauses"].split(",")[0] in {"0", "1", "2"} for m in misc)
    assert any("NA" in m["DK"] for m in misc)  # steps not taken


def test_table3_markdown_and_latex(fixture, tmp_path):
    con, eid, _, _ = fixture
    md = export.table3(con, eid, "markdown", min_count=5, top=4)
    lines = md.splitlines()
    assert (
        lines[0].startswith("| expected pauses")
        and lines[1] == "|---|---|---|"
        and len(lines[2].split(" | ")) == 3
    )
    tex = export.export_table3(con, eid, tmp_path, fmt="latex", min_count=5, top=4).read_text()
    assert r"\begin{tabular}" in tex and tex.count("{") == tex.count("}") and tex.count(r" \\") == 3
    assert export._show(" wasn") == "wasn" and export._show("\n") == "\\n"
    with pytest.raises(StoreError, match="lower --min-count"):
        export.table3(con, eid, min_count=10**6)
    with pytest.raises(StoreError, match="format must be one of"):
        export.table3(con, eid, "html")


def test_exports_stay_in_the_named_directory(fixture, tmp_path):
    con, eid, _, _ = fixture
    out = tmp_path / "out"
    df = pd.DataFrame({"a": [1]})
    for bad in ("../escape.csv", "sub/x.csv", "..", "", "/etc/passwd"):
        with pytest.raises(StoreError):
            export.export_frame(df, out, bad, "csv")
    out.mkdir()
    (out / "link.csv").symlink_to(tmp_path / "stolen.csv")  # a link pointing out of the directory
    with pytest.raises(StoreError, match="outside"):
        export.export_frame(df, out, "link", "csv")
    with pytest.raises(StoreError, match="outside"):
        export.export_conllu(con, eid, out, "link.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert export.export_frame(df, out, "ok", "csv") == (out / "ok.csv").resolve()


def add_cli(sub):
    eval_command.register(sub)
    export_command.register(sub)


def cli(argv):
    p = argparse.ArgumentParser(prog="cyb")
    add_cli(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    args.func(args)


def test_cli_eval_and_export(fixture, tmp_path, monkeypatch, capsys):
    _, _, _, run = fixture
    db = tmp_path / "cli.duckdb"
    monkeypatch.setenv("CYB_DB", str(db))
    text = tmp_path / "story.txt"
    text.write_text("The patients wasn't happy, but they won.\n\nThe students didn't know.\n")
    cli(
        [
            "eval",
            str(run),
            "--text",
            str(text),
            "--mode",
            "dense",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert "tiny-cyb:text/story.txt:dense" in capsys.readouterr().out and db.exists()
    out = tmp_path / "exports"
    for kind in (
        "conllu",
        "table3",
        "tokens",
        "runs",
        "train-log",
        "steps",
        "calibration",
        "kwic",
        "pause-rates",
    ):
        extra = {
            "kwic": ["--token", "students"],
            "table3": ["--min-count", "1", "--format", "latex"],
        }.get(kind, [])
        cli(["export", kind, "--run", "tiny-cyb", "--out-dir", str(out), "--boot", "50", *extra])
    files = sorted(p.name for p in out.iterdir())
    assert "tiny-cyb_text_story.txt_dense.conllu" in files and len(files) == 9
    assert conllu.parse((out / "tiny-cyb_text_story.txt_dense.conllu").read_text())
    kw = pd.read_csv(out / "kwic-tiny-cyb_text_story.txt_dense.csv")
    assert kw["token_text"].str.strip().tolist() == ["students"]
    with pytest.raises(StoreError, match="no evaluation of run 'ghost'"):
        cli(["export", "tokens", "--run", "ghost", "--out-dir", str(out)])
    with pytest.raises(CLIError, match="contrast needs --groups"):
        cli(["export", "contrast", "--run", "tiny-cyb", "--out-dir", str(out)])
    with pytest.raises(StoreError, match="no database"):
        cli(["export", "runs", "--db", str(tmp_path / "none.duckdb"), "--out-dir", str(out)])
    assert len(list(out.iterdir())) == 9


def test_every_flag_has_help():
    p = argparse.ArgumentParser(prog="cyb")
    sub = p.add_subparsers(dest="command")
    add_cli(sub)
    for name in ("eval", "export"):
        for action in sub.choices[name]._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.dest} has no help"
    assert set(KINDS) >= {"conllu", "table3", "tokens", "compare", "kwic"}
