"""Nothing a user does runs foreign code, mixes two runs or loses data.

- a checkpoint asking for its own code is refused even with `y` on stdin, and the code never runs;
- one writer per run or corpus folder (atomic.exclusive): a second `cyb train` on one --out is
  refused in one line naming the first's pid while the first finishes intact; the lock dies
  with a SIGKILLed holder;
- a corpus (build, mix, import) switches whole: a real SIGKILL at every phase of its swap leaves
  the old corpus or the new one, never a mix, and a hand-mixed corpus is refused on read.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import FIXTURE, ROOT, make_run, scratch
from test_bad_inputs import remote_code_checkpoint

from cyb_core import atomic, corpus, corpus_build, corpus_import, synthetic
from cyb_core.atomic import FolderBusy, exclusive
from cyb_core.corpus import CorpusError

CYB = [sys.executable, "-m", "cyb"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ckpt() -> Path:
    return make_run(scratch(), "tiny") / "final"


# ----------------------------------------------------------------------------- foreign code


# one command in the default suite (a subprocess start is slow on two cores); the bad-input rows
# run all three in-process
@pytest.mark.parametrize(
    "command",
    ["eval", *(pytest.param(c, marks=pytest.mark.slow) for c in ("generate", "train"))],
)
def test_a_checkpoint_with_its_own_code_is_refused_with_y_on_stdin(command, ckpt, tmp_path):
    marker = tmp_path / "MARKER"
    evil = remote_code_checkpoint(ckpt, tmp_path / "evil", marker)
    text = tmp_path / "t.txt"
    text.write_text("A short text.")
    argv = {
        "eval": ["eval", str(evil), "--text", str(text), "--db", str(tmp_path / "x.duckdb")],
        "generate": ["generate", str(evil), "--prompt", "Hi"],
        "train": ["train", "--init", str(evil), "--out", str(tmp_path / "run"), "--tokens", "64"],
    }[command]
    r = subprocess.run(
        [*CYB, *argv],
        input="y\ny\n",
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=300,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "`auto_map` field" in lines[0] and "never" in lines[0]
    assert not marker.exists()  # its Python file was never imported
    assert not (tmp_path / "x.duckdb").exists() and not (tmp_path / "run").exists()


def test_every_from_pretrained_passes_trust_remote_code_false():
    """A new call site that forgets it would let transformers ask on stdin."""
    calls = []
    for folder in ("cyb_core", "analysis", "app", "cyb"):
        for f in (ROOT / folder).rglob("*.py"):
            text = f.read_text()
            start = 0
            while (i := text.find(".from_pretrained(", start)) >= 0:
                call = text[i : i + 150].split("\n)")[0]  # up to the call's closing line
                calls.append((f.name, call))
                start = i + 1
    assert len(calls) >= 4
    assert all("trust_remote_code=False" in c for _, c in calls), calls


# ----------------------------------------------------------------------------- one writer


def _hold(folder: str, ready, stop) -> None:
    with exclusive(folder):
        ready.set()
        stop.wait(60)


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "run"), ready, stop))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(FolderBusy, match=f"pid {holder.pid}"):
        with exclusive(tmp_path / "run"):
            pass
    os.kill(holder.pid, signal.SIGKILL)  # no cleanup runs: the OS drops the lock
    holder.join()
    assert (tmp_path / ".run.lock").exists()
    with exclusive(tmp_path / "run") as lock:  # taken at once, stale file and all
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / ".run.lock").exists()
    with exclusive(tmp_path / "run"):  # one holder at a time within one process too
        with pytest.raises(FolderBusy):
            with exclusive(tmp_path / "run"):
                pass


def test_two_trains_on_one_out_the_second_is_refused_the_first_finishes(ckpt, tmp_path):
    out = tmp_path / "run"
    flags = ["--init", str(ckpt), "--variant", "cyb-ap", "--w", "2", "--tokens", str(16 * 4 * 12)]
    flags += ["--data-root", str(FIXTURE), "--out", str(out), "--device", "cpu", "--no-progress"]
    flags += ["--seq-len", "16", "--batch-size", "4", "--eval-every", "1000"]
    first = subprocess.Popen(
        [*CYB, "train", *flags],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.json").exists():  # written under the lock
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # the first is mid-run however fast this machine is
        second = subprocess.run(  # the same command: its config check passes, the lock refuses
            [*CYB, "train", *flags],
            env=ENV,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1 and len(lines) == 1, second.stderr
        assert f"pid {first.pid}" in lines[0] and "in use by another cyb process" in lines[0]
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    summary = json.loads((out / "final" / "summary.json").read_text())
    assert summary["steps"] == 12
    assert json.loads((out / "config.json").read_text())["variant"] == "cyb-ap"
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))
    assert not (tmp_path / ".run.lock").exists()


def test_a_corpus_being_written_is_refused_to_a_second_writer(tmp_path, capsys):
    from cyb.cli import main

    src = tmp_path / "t.txt"
    src.write_text("one\n\ntwo")
    commands = {
        tmp_path / "imp": [
            "data",
            "import",
            str(src),
            "--heldout",
            "0",
            "--out",
            str(tmp_path / "imp"),
        ],
        tmp_path / "mix": [
            "data",
            "mix",
            "--natural",
            str(FIXTURE),
            "--mixed",
            str(tmp_path / "mix"),
        ],
    }
    for folder, argv in commands.items():
        with exclusive(folder):  # another process's build, import or mix under way
            assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by another cyb process (pid {os.getpid()}" in err[0]
        assert not folder.exists()


@pytest.mark.slow
def test_a_sigkilled_train_leaves_its_lock_file_and_the_rerun_resumes(ckpt, tmp_path):
    out = tmp_path / "run"
    cmd = [*CYB, "train", "--init", str(ckpt), "--variant", "cyb-ap", "--w", "2"]
    cmd += ["--data-root", str(FIXTURE), "--out", str(out), "--device", "cpu", "--no-progress"]
    cmd += ["--seq-len", "16", "--batch-size", "4", "--tokens", str(16 * 4 * 100)]
    cmd += ["--ckpt-every", "5", "--eval-every", "1000"]
    first = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "ckpt").is_dir():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (tmp_path / ".run.lock").read_text() == f"{first.pid}\n"  # stale: no flock on it
    assert not (out / "final").exists()
    r = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 101))
    assert not (tmp_path / ".run.lock").exists()


# ----------------------------------------------------------------------------- corpora switch whole

SPLITS = ("pretrain", "finetune", "heldout")
PHASES = ("mid-write", *atomic.PHASES)


def _docs(seed: int) -> dict:
    """Tiny stand-ins for the three archives' documents (build's loaders are replaced)."""
    brown = [
        {
            "doc_id": f"brown/c{c}{i:02d}",
            "source": "brown",
            "title": f"b{i}",
            "text": f"Brown {c} {i} " * 40,
        }
        for c in "ab"
        for i in range(12)
    ]
    pos = {d["doc_id"]: [[0, 5, "Brown", "np"]] for d in brown}
    gut = [
        {
            "doc_id": f"gutenberg/book{i}",
            "source": "gutenberg",
            "title": "g",
            "text": f"G {i} " * 900,
        }
        for i in range(3)
    ]
    aus = [{"doc_id": "austen/emma", "source": "austen", "title": "Emma", "text": "E " * 2000}]
    return {"brown": brown, "pos": pos, "gutenberg": gut, "austen": aus}


def _fake_sources(monkeypatch, tmp_path):
    d = _docs(0)
    monkeypatch.setattr(
        corpus_build, "fetch_npm", lambda name, version, cache: tmp_path / f"{name}.tgz"
    )
    monkeypatch.setattr(corpus_build, "fetch_deb", lambda name, cache: tmp_path / f"{name}.deb")
    monkeypatch.setattr(corpus_build, "_sha256", lambda path: "0" * 64)
    monkeypatch.setattr(corpus_build, "load_gutenberg", lambda p, progress: (d["gutenberg"], {}))
    monkeypatch.setattr(corpus_build, "load_brown", lambda p, progress: (d["brown"], d["pos"], {}))
    monkeypatch.setattr(corpus_build, "load_austen", lambda p, progress: (d["austen"], {}))


def _read(root: Path) -> dict:
    return {s: corpus.load_split(s, root) for s in SPLITS}


def _killed_at(phase: str, folder: Path, work) -> None:
    """Run `work()` in a child process that SIGKILLs itself at `phase` of `folder`'s swap."""

    def child():
        def hook(name, path):
            if path.name != folder.name:
                return
            if phase == "mid-write" and name == "written":  # a kill inside write()
                tmp = path.with_name(path.name + ".tmp")
                next(p for p in tmp.iterdir() if p.is_file()).unlink()
            elif phase == "removing-old" and name == "removing-old":  # inside its rmtree
                old = path.with_name(path.name + ".old")
                next(p for p in old.iterdir() if p.is_file()).unlink()
            elif name != phase:
                return
            os.kill(os.getpid(), signal.SIGKILL)

        atomic._phase_hook = hook
        work()
        os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL


def _whole(root: Path, old: dict, new: dict) -> str:
    got = _read(root)
    assert got in (old, new), "a mix of two corpora"
    return "old" if got == old else "new"


@pytest.mark.parametrize("phase", PHASES)
def test_build_killed_at_every_phase_of_its_swap_leaves_one_whole_corpus(
    phase, tmp_path, monkeypatch
):
    _fake_sources(monkeypatch, tmp_path)
    out, fix = tmp_path / "corpus", tmp_path / "fixture"
    corpus_build.build(out, fix, tmp_path / "cache", seed=0, progress=False)
    old = _read(out)
    corpus_build.build(tmp_path / "ref", None, tmp_path / "cache", seed=1, progress=False)
    new = _read(tmp_path / "ref")
    assert old != new
    _killed_at(phase, out, lambda: corpus_build.build(out, fix, tmp_path / "cache", 1, False))
    seen = _whole(out, old, new)
    assert seen == ("new" if phase in ("renamed-new", "removing-old", "done") else "old")
    prov = json.loads((atomic.valid_dir(out) / "PROVENANCE.json").read_text())
    assert prov["seed"] == {"old": 0, "new": 1}[seen]
    corpus_build.build(out, fix, tmp_path / "cache", seed=1, progress=False)  # the rerun completes
    assert _read(out) == new
    assert sorted(
        p.name for p in tmp_path.iterdir() if p.name.startswith(("corpus", ".corpus"))
    ) == ["corpus"]


@pytest.mark.parametrize("phase", PHASES)
def test_mix_killed_at_every_phase_of_its_swap_leaves_one_whole_corpus(phase, tmp_path):
    mixed = tmp_path / "mixed"
    synthetic.write_mixed(mixed, FIXTURE, share=0.3, seed=0)
    old = _read(mixed)
    synthetic.write_mixed(tmp_path / "ref", FIXTURE, share=0.5, seed=1)
    new = _read(tmp_path / "ref")
    _killed_at(phase, mixed, lambda: synthetic.write_mixed(mixed, FIXTURE, share=0.5, seed=1))
    seen = _whole(mixed, old, new)
    assert seen == ("new" if phase in ("renamed-new", "removing-old", "done") else "old")
    manifest = json.loads((atomic.valid_dir(mixed) / "mix.json").read_text())
    assert manifest["share"] == {"old": 0.3, "new": 0.5}[seen]


@pytest.mark.parametrize("phase", PHASES)
def test_import_killed_at_every_phase_of_its_swap_leaves_one_whole_corpus(phase, tmp_path):
    src = tmp_path / "texts"
    src.mkdir()
    for i in range(6):
        (src / f"{i}.txt").write_text(f"Text number {i}, plain words.")
    out = tmp_path / "mine"
    corpus_import.import_corpus([str(src)], out, heldout=0.2, seed=0)
    old = _read_import(out)
    corpus_import.import_corpus([str(src)], tmp_path / "ref", heldout=0.2, seed=1)
    new = _read_import(tmp_path / "ref")
    _killed_at(
        phase, out, lambda: corpus_import.import_corpus([str(src)], out, heldout=0.2, seed=1)
    )
    got = _read_import(out)
    assert got in (old, new)


def _read_import(root: Path) -> dict:
    return {s: corpus.load_split(s, root) for s in ("heldout", "finetune")}


def test_a_hand_mixed_corpus_is_refused_on_read(tmp_path, monkeypatch):
    _fake_sources(monkeypatch, tmp_path)
    for seed in (0, 1):
        corpus_build.build(
            tmp_path / f"s{seed}", None, tmp_path / "cache", seed=seed, progress=False
        )
    shutil.copy(tmp_path / "s1" / "heldout.jsonl.gz", tmp_path / "s0" / "heldout.jsonl.gz")
    assert corpus.load_split("pretrain", tmp_path / "s0")  # the untouched splits still read
    with pytest.raises(CorpusError, match="heldout.jsonl.gz does not match PROVENANCE.json"):
        corpus.load_split("heldout", tmp_path / "s0")
    with pytest.raises(CorpusError, match="does not match"):  # the check before training
        corpus.require_split("heldout", tmp_path / "s0")
    synthetic.write_mixed(tmp_path / "m", tmp_path / "s1", share=0.5)
    # same size, other bytes: the stored hash tells them apart
    path = tmp_path / "s1" / "finetune.jsonl.gz"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorpusError, match="SHA-256 differs"):
        corpus.load_split("finetune", tmp_path / "s1")
    # a mixed corpus is checked against its mix.json the same way
    data = gzip.decompress((tmp_path / "m" / "pretrain.jsonl.gz").read_bytes())
    (tmp_path / "m" / "pretrain.jsonl.gz").write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(CorpusError, match="does not match mix.json"):
        corpus.load_split("pretrain", tmp_path / "m")


# ----------------------------------------------------------------------------- what we read


def test_symlinked_folders_are_followed_once_and_loops_refused(tmp_path):
    from cyb_core.folders import files_below

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked.txt").write_text("text in a linked folder")
    src = tmp_path / "src"
    (src / ".hidden").mkdir(parents=True)
    (src / ".hidden" / "skip.txt").write_text("hidden")
    (src / "own.txt").write_text("own text")
    (src / "link").symlink_to(elsewhere)
    assert files_below(src) == [src / "link" / "linked.txt", src / "own.txt"]
    m = corpus_import.import_corpus([str(src)], tmp_path / "out", heldout=0)
    assert [f["file"] for f in m["sources"]] == ["src/link/linked.txt", "src/own.txt"]

    (src / "again").symlink_to(elsewhere)  # the same folder twice: its files would count twice
    with pytest.raises(ValueError, match="are the same folder"):
        files_below(src)
    (src / "again").unlink()
    (elsewhere / "up").symlink_to(src)  # src/link/up -> src: a loop
    with pytest.raises(ValueError, match="symbolic link loop"):
        files_below(src)
    (elsewhere / "up").unlink()
    (src / "broken").symlink_to(tmp_path / "gone")
    with pytest.raises(ValueError, match="broken symbolic link"):
        files_below(src)


def test_a_tokenizer_far_larger_than_the_embeddings_needs_allow_resize(ckpt, tmp_path):
    from test_bad_inputs import _big_tokenizer

    from cyb_core import architecture
    from cyb_core import model as model_lib

    architecture.check_growth(8192, 8192 + 1000)  # the margin: 1,000 rows or 10%
    architecture.check_growth(100_000, 110_000)
    with pytest.raises(ValueError, match="--allow-resize"):
        architecture.check_growth(8192, 8192 + 1001)
    with pytest.raises(ValueError, match="--allow-resize"):
        architecture.check_growth(100_000, 110_001)
    big = _big_tokenizer(ckpt, tmp_path / "big", 3000)
    with pytest.raises(ValueError, match="growing them by"):
        model_lib.load(big)
    m = model_lib.load(big, allow_resize=True)
    assert m.vocab_size >= m.n_tokens == len(m.tokenizer)
    assert model_lib.load(ckpt).vocab_size < m.n_tokens  # the checkpoint's own tokenizer fits
