"""docs/own-model-and-corpus.md, followed: its commands are read from the page and run in order
(plus flags that make them toy-sized) on a folder of .txt files and a tiny GPT-2 of our own."""

import io
import json
import re
import shlex
import subprocess
import sys

import pytest
from support import ROOT

from cyb.cli import main
from cyb_core.corpus import load_split

DOC = ROOT / "docs" / "own-model-and-corpus.md"
TOY = {  # appended to the page's commands: later flags win in argparse
    "train": "--tokens 1024 --seq-len 32 --batch-size 4 --eval-every 100 --ckpt-every 100 "
    "--device cpu --no-progress",
    "eval": "--max-docs 2 --max-chars 300 --seq-len 32 --device cpu --no-progress",
    "generate": "--max-new-tokens 4 --device cpu",
}


def doc_blocks(kind: str) -> list[list[str]]:
    """The non-empty lines of every ```kind block of the page, in order."""
    return [
        [ln for ln in block.splitlines() if ln.strip()]
        for block in re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)
    ]


def run(line: str, capsys) -> tuple[int, str, str]:
    argv = shlex.split(line)
    assert argv[0] == "cyb", line
    code = main(argv[1:])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def project(tmp_path, monkeypatch):
    """tmp_path as the working directory, with my-texts/ (three English .txt files cut from the
    test fixture, and notes.txt in Latin-1) and my-model/ (a 2-layer GPT-2 saved by transformers)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from cyb_core import tokenizer as tok_lib

    texts = tmp_path / "my-texts"
    texts.mkdir()
    docs = load_split("finetune", ROOT / "data" / "fixture")
    for name, i in zip("abc", (0, 1, 2), strict=True):
        (texts / f"{name}.txt").write_text(docs[i]["text"][:3000], encoding="utf-8")
    (texts / "notes.txt").write_bytes("Caf\u00e9 notes.\n\nA second paragraph.\n".encode("latin-1"))

    tok = tok_lib.load(ROOT / "data" / "tokenizer")
    eot = tok.eos_token_id
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eot,
        eos_token_id=eot,
    )
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "my-model")
    tok.save_pretrained(tmp_path / "my-model")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CYB_DB", raising=False)
    return tmp_path


def test_the_page_runs_as_written(project, capsys, monkeypatch):
    # the console block: a bad file fails before anything is written, with the line shown
    (console,) = doc_blocks("console")
    cmd, expected = console[0].removeprefix("$ "), console[1]
    code, _, err = run(cmd, capsys)
    assert code == 1 and err.strip() == expected
    assert not (project / "my-corpus").exists()
    # nor does training on the plain folder write a run folder
    code, _, err = run("cyb train --init my-model --data-root my-texts --out runs/x", capsys)
    assert code == 1 and "cyb data import my-texts" in err and not (project / "runs").exists()

    # the fix the error gives, run as written: the converted file replaces the Latin-1 one
    hint = expected.split("e.g. ", 1)[1].replace("FILE", "my-texts/notes.txt")
    subprocess.run(["bash", "-c", hint], check=True, cwd=project)
    assert sorted(p.name for p in (project / "my-texts").iterdir()) == [
        "a.txt",
        "b.txt",
        "c.txt",
        "notes.txt",
    ]
    assert (project / "my-texts" / "notes.txt").read_text(encoding="utf-8").startswith("Caf\u00e9")

    lines = [ln for block in doc_blocks("sh") for ln in block]
    assert [shlex.split(ln)[1] for ln in lines] == [
        "data",
        "train",
        "eval",
        "eval",
        "generate",
        "app",
    ]
    outputs = []
    for line in lines[:-1]:  # all but `cyb app`, a server
        toy = TOY.get(shlex.split(line)[1], "")
        code, out, err = run(f"{line} {toy}", capsys)
        assert code == 0, (line, err)
        outputs.append(out)

    manifest = json.loads((project / "my-corpus" / "IMPORT.json").read_text())
    assert [f["file"] for f in manifest["sources"]] == [
        f"my-texts/{n}.txt" for n in ("a", "b", "c", "notes")
    ]
    held = load_split("heldout", project / "my-corpus")
    train = load_split("finetune", project / "my-corpus")
    assert held and train and not {d["doc_id"] for d in held} & {d["doc_id"] for d in train}

    run_dir = project / "runs" / "my-run"
    cfg = json.loads((run_dir / "final" / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["cyb"]["variant"] == "cyb-ap"

    # the second eval found the run by its id and printed one JSON object
    summary = json.loads(outputs[3])
    assert summary["eval_id"] == "my-run:text/a.txt.d2.c300:dense" and summary["n_tokens"] > 0
    assert "my-run:my-corpus/heldout.d2.c300:dense" in outputs[2]
    assert outputs[4].startswith("It was") and "[" in outputs[4]  # --show-pauses

    from analysis import store

    with store.reading(project / "data" / "cyb.duckdb") as con:
        runs = con.execute("SELECT run_id FROM runs").fetchall()
        evals = con.execute("SELECT eval_id FROM evals ORDER BY eval_id").fetchall()
    assert runs == [("my-run",)] and len(evals) == 2
    assert "(evaluation" in outputs[2]  # without --json: the line of text

    # `-` is standard input for eval --text and generate --prompt-file
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"It was a dark night.\n")))
    code, out, err = run("cyb eval my-run --text - --json " + TOY["eval"], capsys)
    assert code == 0 and json.loads(out)["eval_id"] == "my-run:text/stdin.d2.c300:dense", err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"It was\n\nShe said\n")))
    code, out, err = run(
        "cyb generate runs/my-run/final --prompt-file - " + TOY["generate"], capsys
    )
    assert code == 0 and out.startswith("It was") and "\n\nShe said" in out, err

    # `--out -`: the export on standard output, nothing written
    code, out, _ = run("cyb export runs --out -", capsys)
    assert code == 0 and out.splitlines()[0].startswith("eval_id,run_id")
    assert sorted(ln.split(",")[1] for ln in out.splitlines()[1:]) == ["my-run"] * 3
    assert not (project / "-").exists()

    # the python block: the trained model in plain transformers, DK and pauses never emitted
    (snippet,) = doc_blocks("python")
    ns = {}
    exec("\n".join(snippet), ns)
    out_ids = ns["out"][0].tolist()
    assert capsys.readouterr().out.startswith("It was") and len(out_ids) > 2
    from cyb_core import tokenizer as tok_lib

    special = tok_lib.special_ids(ns["tok"])
    assert not {special["dk"], *special["pauses"]} & set(out_ids)

    # rerunning the import replaces it whole; a different seed deals other pieces
    code, _, _ = run(lines[0] + " --seed 1", capsys)
    assert code == 0
    assert json.loads((project / "my-corpus" / "IMPORT.json").read_text())["seed"] == 1


def test_the_page_warns_that_plain_decoding_of_its_last_step_model_is_garbage():
    """The page trains with --omega 0:0:0:1 (step 0 never trained) and then shows plain
    generate(), which reads only step 0: the warning must stand right after that snippet."""
    page = DOC.read_text()
    (train,) = [ln for block in doc_blocks("sh") for ln in block if " train " in ln]
    assert "--omega 0:0:0:1" in train
    section = page.split("## 5.", 1)[1].split("\n## ", 1)[0]
    after = section.split("```python", 1)[1].split("```", 1)[1]
    assert "--omega 0:0:0:1" in after and "garbage" in after and "cyb generate" in after
