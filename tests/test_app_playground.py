"""The Playground page (AppTest) and analysis.playground: scoring typed text as `cyb eval
--text` does, side by side, generation with pauses, saving, bad checkpoints and input limits.

Its database holds two tiny random runs of fixtures_app (W = 4 CYB-AP and TBYS) whose
checkpoints stay on disk, each evaluated on a short text file by `cyb eval --text`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_app import make_app_run
from streamlit.testing.v1 import AppTest
from support import ROOT

from analysis import lookups, store
from analysis import playground as pg
from app import token_html
from cyb.cli import main as cyb_main
from cyb.commands import app as app_cli

MAIN = str(ROOT / "app" / "main.py")
TEXT = (
    "The committee met on Tuesday to discuss the budget.\n"
    "Cora had 339 apples and found 129 more: 339 + 129 = 468 apples."
)


@pytest.fixture(scope="module")
def setup():
    """(database, {run name: run directory}, text file) with both runs evaluated on the file."""
    tmp = Path(tempfile.mkdtemp(prefix="cyb-playground-test-"))
    runs = {name: make_app_run(tmp, name) for name in ("ap-full", "tbys-3")}
    text = tmp / "sample.txt"
    text.write_text(TEXT)
    db = tmp / "cyb.duckdb"
    for run in runs.values():
        assert (
            cyb_main(["--no-progress", "eval", str(run), "--text", str(text), "--db", str(db)]) == 0
        )
    yield db, runs, text
    shutil.rmtree(tmp, ignore_errors=True)


def _evals(db) -> list[str]:
    with store.reading(db) as con:
        return sorted(lookups.list_evals(con)["eval_id"])


def _tokens(db, eval_id: str):
    with store.reading(db) as con:
        return con.execute(
            "SELECT * EXCLUDE (eval_id, doc_id) FROM tokens WHERE eval_id = ? ORDER BY idx",
            [eval_id],
        ).df()


def _floats(lists) -> np.ndarray:
    """A column of DuckDB lists (NULL entries arrive masked) as an (N, K) float array."""
    return np.array(
        [[np.nan if x is None or x is np.ma.masked else float(x) for x in v] for v in lists]
    )


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.message for e in at.exception]
    return [e.value for e in at.error]


def _html(at: AppTest) -> list[str]:
    return [h.proto.body for h in at.get("html")]


@pytest.fixture
def page(setup, monkeypatch):
    monkeypatch.setenv("CYB_DB", str(setup[0]))

    def open_page() -> AppTest:
        at = AppTest.from_file(MAIN, default_timeout=120).run()
        at.switch_page("views/playground.py").run()
        _ok(at)
        return at

    return open_page


# ----------------------------------------------------------------------------- scores == cyb eval --text


@pytest.mark.parametrize("mode", ["dense", "adaptive"])
def test_scores_equal_cyb_eval_text(setup, tmp_path, mode):
    db, runs, text = setup
    db = tmp_path / "eq.duckdb"
    argv = ["--no-progress", "eval", str(runs["ap-full"]), "--text", str(text), "--db", str(db)]
    assert cyb_main([*argv, "--mode", mode]) == 0
    loaded = pg.load(runs["ap-full"])
    scored = pg.score(loaded, text.read_text(), mode)
    eid = pg.save(scored, db)
    assert eid == f"ap-full:{pg.dataset_name(TEXT)}:{mode}"
    want, got = _tokens(db, f"ap-full:text/sample.txt:{mode}"), _tokens(db, eid)
    assert len(got) == len(want) > 20
    vectors = ["dk", "t", "s"]  # d_i, t_i, s_i: lists, NULL for steps not taken (adaptive)
    pd.testing.assert_frame_equal(want.drop(columns=vectors), got.drop(columns=vectors))
    for col in vectors:
        np.testing.assert_array_equal(_floats(want[col]), _floats(got[col]), err_msg=col)
    with store.reading(db) as con:
        texts = con.execute("SELECT DISTINCT text FROM docs").fetchall()
    assert texts == [(TEXT,)]


# ----------------------------------------------------------------------------- the page


def test_page_scores_typed_text_side_by_side(page, setup):
    at = page()
    assert at.title[0].value == "Playground"
    assert at.selectbox(key="pg_run_A").value == "ap-full"  # the sidebar's run, on disk
    legend, text = _html(at)[:2]
    assert "expected processing steps" in legend
    n = len(pg.score(pg.load(setup[1]["ap-full"]), TEXT.replace("\n", " ")).tables["tokens"])
    at.text_area(key="pg_text").set_value(TEXT.replace("\n", " ")).run()
    _ok(at)
    text = _html(at)[1]
    assert text.count('class="tok"') == n and "background:rgb" in text
    assert "d_i [" in text and "POS " in text and "next " in text  # the Text page's hover
    assert [c.key for c in at.get("plotly_chart")] == ["pg_hist"]
    at.selectbox(key="pg_run_B").set_value("tbys-3").run()
    _ok(at)
    assert len(at.tabs) == 2
    bodies = _html(at)
    assert sum('class="cyb-text"' in b for b in bodies) == 3  # A, B and the difference
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["name"] for t in spec["data"]} == {"A: ap-full", "B: tbys-3"}
    at.radio(key="pg_mode").set_value("adaptive").run()
    _ok(at)
    assert "taken " in _html(at)[1]  # adaptive rows carry the pauses taken


def test_page_generates_with_pauses(page, setup):
    at = page()
    at.text_area(key="pg_prompt").set_value("The cat").run()
    at.number_input(key="pg_max_new").set_value(8).run()
    at.button(key="pg_generate").click().run()
    _ok(at)
    from cyb_core import engine

    model = pg.load(setup[1]["ap-full"]).model
    want = engine.generate(model, ["The cat"], recipe="constant", max_new_tokens=8)[0]
    gen = next(b for b in _html(at) if "cyb-gen" in b)
    assert gen.count('class="tok gen"') == len(want.pieces) > 0
    assert [c.value for c in at.code][-1] == "The cat" + want.render(show_pauses=True)
    command = at.main.caption[-1].value
    assert "cyb generate" in command and "--show-pauses" in command
    # Recipe 2, sampled: a different loop, still streamed token by token with counts
    at.radio(key="pg_recipe").set_value("variable")
    at.radio(key="pg_decoding").set_value("sampled")
    at.number_input(key="pg_seed").set_value(3)
    at.button(key="pg_generate").click().run()
    _ok(at)
    want = engine.generate(
        model, ["The cat"], recipe="variable", max_new_tokens=8, do_sample=True, seed=3
    )[0]
    assert [c.value for c in at.code][-1] == "The cat" + want.render(show_pauses=True)
    # a click while it runs (Stop) leaves what was produced, marked stopped
    at.session_state["pg_gen"] = {**at.session_state["pg_gen"], "status": "running"}
    at.button(key="pg_stop").click().run()
    _ok(at)
    assert any("stopped" in c.value for c in at.main.caption)
    # the continuation goes back to the text box to be scored
    at.button(key="pg_score_gen").click().run()
    assert at.text_area(key="pg_text").value == "The cat" + want.text


def test_page_saves_only_when_asked(page, setup):
    db = setup[0]
    before = _evals(db)
    at = page()
    at.text_area(key="pg_text").set_value("A short text to keep.").run()
    at.button(key="pg_generate").click().run()
    _ok(at)
    assert _evals(db) == before  # scoring and generating wrote nothing
    at.text_input(key="pg_dataset").set_value("playground/mine").run()
    at.button(key="pg_save").click().run()
    _ok(at)
    assert "ap-full:playground/mine:dense" in at.success[0].value
    assert _evals(db) == sorted([*before, "ap-full:playground/mine:dense"])
    assert len(_tokens(db, "ap-full:playground/mine:dense")) > 3


def test_playground_without_a_database(setup, tmp_path, monkeypatch):
    """A newcomer's first `cyb app`: no database yet, the Playground next to Getting started;
    its save creates the database."""
    db = tmp_path / "new.duckdb"
    monkeypatch.setenv("CYB_DB", str(db))
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    assert "no evaluations yet" in at.title[0].value
    at.switch_page("views/playground.py").run()
    _ok(at)
    assert "Type the path" in at.info[0].value
    at.text_input(key="pg_path_A").set_value(str(setup[1]["tbys-3"])).run()
    _ok(at)
    assert 'class="tok"' in _html(at)[1]
    at.button(key="pg_save").click().run()
    _ok(at)
    assert _evals(db) == [f"tbys-3:{pg.dataset_name(at.text_area(key='pg_text').value)}:dense"]


def _corrupt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "model.safetensors").write_bytes(b"\x00" * 64)
    return dst


def _reshaped(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["hidden_size"], cfg["intermediate_size"] = 32, 64
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda src, tmp: tmp / "nowhere", "no run or checkpoint"),
        (lambda src, tmp: tmp.mkdir() or tmp, "neither a run directory"),
        (_corrupt, "corrupt or truncated"),
        (_reshaped, "another shape"),
    ],
    ids=["missing", "not-a-checkpoint", "corrupt", "wrong-shape"],
)
def test_page_bad_checkpoint(page, setup, tmp_path, make, message):
    path = make(setup[1]["ap-full"] / "final", tmp_path / "ckpt")
    at = page()
    at.selectbox(key="pg_run_A").set_value("<path>").run()
    assert not _errors(at) and "Type the path" in at.info[0].value
    at.text_input(key="pg_path_A").set_value(str(path)).run()
    errors = _errors(at)
    assert len(errors) == 1 and message in errors[0]
    assert not at.get("plotly_chart") and "pg_generate" not in [b.key for b in at.button]


def test_model_loaded_once_for_every_session(page, setup, tmp_path, monkeypatch):
    path = shutil.copytree(setup[1]["tbys-3"] / "final", tmp_path / "shared")
    calls = []
    load = pg.load
    monkeypatch.setattr(pg, "load", lambda *a, **k: calls.append(a) or load(*a, **k))
    for _ in range(2):  # two sessions (two browser tabs), one process
        at = page()
        at.selectbox(key="pg_run_A").set_value("<path>").run()
        at.text_input(key="pg_path_A").set_value(str(path)).run()
        _ok(at)
        assert "A: shared" in at.get("plotly_chart")[0].proto.spec
    assert [c for c in calls if c[0] == str(path)] == [(str(path), "cpu", None)]


def test_page_checkpoint_too_big(page, setup, tmp_path, monkeypatch):
    path = shutil.copytree(setup[1]["tbys-3"] / "final", tmp_path / "big")
    monkeypatch.setattr(pg, "available_memory", lambda device: 1000)
    at = page()
    at.selectbox(key="pg_run_A").set_value("<path>").run()
    at.text_input(key="pg_path_A").set_value(str(path)).run()
    assert "too big to load here" in _errors(at)[0]


def test_page_input_limits(page):
    at = page()
    at.text_area(key="pg_text").set_value("word " * (pg.MAX_CHARS // 5 + 1)).run()
    errors = _errors(at)
    assert len(errors) == 1 and "at most 6,000" in errors[0]
    assert not at.get("plotly_chart")
    at.text_area(key="pg_text").set_value("   ").run()
    assert "empty" in _errors(at)[0]
    at.text_area(key="pg_prompt").set_value("x" * (pg.MAX_PROMPT_CHARS + 1)).run()
    at.button(key="pg_generate").click().run()
    assert any("prompt has 2,001 characters" in e for e in _errors(at))


# ----------------------------------------------------------------------------- pieces


def test_dataset_name_and_limits():
    assert pg.dataset_name("The cat sat on the mat today.").startswith(
        "playground/The_cat_sat_on_the-"
    )
    assert pg.dataset_name("The cat sat on the mat.") != pg.dataset_name("The cat sat on the rug.")
    assert pg.dataset_name("!!!").startswith("playground/text-")
    store.make_eval_id("run", pg.dataset_name("a: b\tc"), "dense")  # a valid name
    assert pg.check_text("a\r\nb") == "a\nb"
    with pytest.raises(store.StoreError, match="at most"):
        pg.check_text("x" * (pg.MAX_CHARS + 1))


def test_generation_html_shows_pauses():
    out = token_html.generation_html("The", [" cat", " sat"], [0, 3], 4)
    assert out.count('class="tok gen"') == 2 and "[0]" in out and "[3]" in out
    assert "answered after 3 of 3 pauses" in out
    taken = token_html.generation_html("The", [" cat", " sat"], [1, 2], 4, "variable")
    assert "took 1 pause (at most 3)" in taken and "took 2 pauses" in taken
    assert token_html.show_pauses([" cat", " sat"], [0, 3]) == " cat[0] sat[3]"


def test_run_checkpoints_finds_relative_paths(tmp_path, setup):
    ckpt = setup[1]["ap-full"] / "final"
    runs = pd.DataFrame(
        {
            "run_id": ["abs", "rel", "gone", "none"],
            "params": [
                json.dumps({"checkpoint": str(ckpt), "cyb": {"variant": "cyb-ap", "w": 4}}),
                json.dumps({"checkpoint": "ap-full/final"}),
                json.dumps({"checkpoint": str(tmp_path / "gone")}),
                None,
            ],
        }
    )
    found = pg.run_checkpoints(runs, (ckpt.parents[1],))
    assert list(found["run_id"]) == ["abs", "rel"]
    assert set(found["checkpoint"]) == {str(ckpt.resolve())}


def test_cli_device(monkeypatch, tmp_path):
    parser = argparse.ArgumentParser(prog="cyb")
    app_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["app", "--db", str(tmp_path / "x.duckdb")])
    assert args.device == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_args(["app", "--device", "gpu"])
    calls = []

    class Server:  # stands in for subprocess.Popen
        def __init__(self, cmd, env):
            calls.append(env)

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(app_cli.subprocess, "Popen", Server)
    args.func(args)
    assert calls[0]["CYB_DEVICE"] == "cpu"
    import torch

    if not torch.cuda.is_available():
        args = parser.parse_args(["app", "--db", str(tmp_path / "x.duckdb"), "--device", "cuda"])
        from cyb.parser import CLIError

        with pytest.raises(CLIError, match="no such CUDA device"):
            args.func(args)


def test_nul_is_refused_as_cyb_eval_refuses_it(page):
    with pytest.raises(store.StoreError, match="NUL character .at position 3"):
        pg.check_text("abc\x00def")
    with pytest.raises(store.StoreError, match="prompt contains a NUL"):
        pg.check_text("a\x00", pg.MAX_PROMPT_CHARS, "prompt")
    at = page()
    at.text_area(key="pg_text").set_value("a text\x00with a NUL").run()
    errors = _errors(at)
    assert len(errors) == 1 and "NUL character" in errors[0]
    assert not at.get("plotly_chart")


def test_text_survives_a_failed_checkpoint_choice(page, setup, tmp_path):
    at = page()
    mine, prompt = "My own text about apples and 2 + 2 = 4.", "My prompt:"
    at.text_area(key="pg_text").set_value(mine).run()
    at.text_area(key="pg_prompt").set_value(prompt).run()
    _ok(at)
    run_a = at.selectbox(key="pg_run_A").value
    at.selectbox(key="pg_run_A").set_value("<path>").run()
    at.text_input(key="pg_path_A").set_value(str(tmp_path / "nowhere")).run()
    assert "no run or checkpoint" in _errors(at)[0]
    assert not at.text_area  # the page stopped before the boxes
    at.selectbox(key="pg_run_A").set_value(run_a).run()
    _ok(at)
    for key, value in (("pg_text", mine), ("pg_prompt", prompt)):
        box = at.text_area(key=key)
        assert box.value == value  # what the page scores
        # what the browser draws: the value sent with the box, else the box's default
        assert (box.proto.value if box.proto.set_value else box.proto.default) == value
    assert "apples" in "".join(_html(at))  # and it is the text the page scores


def test_memory_estimate_counts_the_tokenizer_and_config_shapes(setup, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    src = setup[1]["ap-full"] / "final"
    big = shutil.copytree(src, tmp_path / "big")
    tok = PreTrainedTokenizerFast.from_pretrained(str(big))
    tok.add_tokens([f"extra_{i}" for i in range(5000)])
    tok.save_pretrained(big)
    cfg = json.loads((big / "config.json").read_text())
    rows = pg.tokenizer_size(big) - cfg["vocab_size"]
    assert rows >= 5000
    grow = rows * cfg["hidden_size"] * 4 * (1 if cfg.get("tie_word_embeddings", True) else 2)
    assert pg.memory_need(big) - pg.memory_need(src) >= pg.LOAD_FACTOR * grow
    assert pg.memory_need(src) > pg.LOAD_FACTOR * pg.weights_bytes(src)  # the tokenizer counts
    need = pg.memory_need(src)
    monkeypatch.setattr(pg, "available_memory", lambda device: need + 1)
    pg.check_fits(src, "cpu")
    with pytest.raises(store.StoreError, match="too big to load here"):
        pg.check_fits(big, "cpu")
