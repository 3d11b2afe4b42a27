"""Every command, every kind of bad input: exit status 1, one line on stderr, no traceback,
and nothing stored changed (row counts of the cyb database; a foreign database byte for byte).

Each row is (command line, a needle of the expected message). Placeholders in the command line
name the inputs, built once per module in a scratch folder:
{run} a tiny run directory, {ckpt} its final checkpoint, {db} a copy of a cyb database with one
evaluation (fresh per row), {foreign} a DuckDB file with its own `meta` table (fresh per row),
{garbage} a text file named .duckdb, {file} a plain file (a path "under" it cannot be created),
{tmp} the row's own scratch folder, and the broken inputs named in `BROKEN`.
Commands run in-process through `cyb.cli.main`; `app` never reaches its server.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import pytest
from support import FIXTURE, RUN, make_run, scratch, synthetic_tables

from analysis import schema, store
from cyb.cli import main

BIG = 70_000  # past the first 64 KiB, where a NUL byte used to go unnoticed


def _with_config(src: Path, dest: Path, **fields) -> Path:
    """A copy of checkpoint `src` whose config.json has `fields` set (None: removed)."""
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(fields)
    (dest / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    return dest


def remote_code_checkpoint(src: Path, dest: Path, marker: Path) -> Path:
    """A checkpoint whose config.json asks for its own code (auto_map, an unknown model_type);
    importing that code creates `marker`, so a test sees whether it ever ran."""
    _with_config(
        src,
        dest,
        model_type="evil-llama",
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
    )
    (dest / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('foreign code ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil-llama'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    return dest


def _big_tokenizer(src: Path, dest: Path, extra: int) -> Path:
    """A copy of `src` whose tokenizer has `extra` more entries than the model has rows."""
    from transformers import PreTrainedTokenizerFast

    shutil.copytree(src, dest)
    tok = PreTrainedTokenizerFast.from_pretrained(str(dest))
    tok.add_tokens([f"extra_token_{i}" for i in range(extra)])
    tok.save_pretrained(dest)
    return dest


def _truncated_cache(root: Path) -> Path:
    """A build cache whose archives are cut short, as an interrupted download leaves them."""
    import gzip
    import io
    import tarfile

    from cyb_core.corpus_sources import BROWN, DEB, GUTENBERG

    cache = root / "cache"
    cache.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"x" * 100_000
        info = tarfile.TarInfo("package/gutenberg/carroll-alice.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tgz = gzip.compress(buf.getvalue())
    for name, version in (GUTENBERG, BROWN):
        (cache / f"{name}-{version}.tgz").write_bytes(tgz[: len(tgz) // 2])
    (cache / f"{DEB}_1.0-1_all.deb").write_bytes(b"!<arch>\n")
    return cache


def _checkpoint_with(src: Path, dest: Path, **cyb) -> Path:
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["cyb"] = {**cfg.get("cyb", {}), **cyb}
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


@pytest.fixture(scope="module")
def inputs() -> dict[str, Path]:
    root = scratch()
    run = make_run(root)
    ckpt = run / "final"
    db = root / "cyb.duckdb"
    _, tables = synthetic_tables()
    store.write_eval(
        db, run=RUN, eval_row={"run_id": "synthetic", "dataset": "x", "mode": "dense"}, **tables
    )
    trunc = root / "truncated"
    shutil.copytree(ckpt, trunc)
    weights = trunc / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    badtok = root / "badtok"
    shutil.copytree(ckpt, badtok)
    (badtok / "tokenizer.json").write_text("{not json")
    nul = root / "nul.txt"
    nul.write_bytes(b"word " * (BIG // 5) + b"\x00" + b" more words")
    latin1 = root / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait ".encode("latin-1") * 10)
    empty = root / "empty.txt"
    empty.write_text("  \n\n")
    text = root / "ok.txt"
    text.write_text("A short text to evaluate.")
    (root / "file").write_text("a file, not a folder")
    garbage = root / "garbage.duckdb"
    garbage.write_text("this is not a database\n" * 10)
    import_prev = root / "imported"  # an earlier import, and a folder of the user's inside it
    import_src = root / "import-src"
    import_src.mkdir()
    for name in "abc":
        (import_src / f"{name}.txt").write_text(f"Document {name}, a few words of plain text.")
    assert main(["data", "import", str(import_src), "--out", str(import_prev)]) == 0
    (import_prev / "my-notes").mkdir()
    (import_prev / "my-notes" / "keep.txt").write_text("the user's own file")
    loop = root / "loop"
    (loop / "sub").mkdir(parents=True)
    (loop / "sub" / "a.txt").write_text("some text\n\nmore text\n\nand more")
    (loop / "sub" / "back").symlink_to(loop)
    badname = root / "badname"
    badname.mkdir()
    (badname / "fine.txt").write_text("some text\n\nmore text\n\nand more")
    with open(os.fsencode(badname) + b"/caf\xe9.txt", "wb") as f:  # a Latin-1 file name
        f.write(b"text\n\nmore\n\nagain")
    toml = root / "exp.toml"
    toml.write_text(
        f'out = "{root}/exp-runs"\n[defaults]\ninit = "{ckpt}"\ndata_root = "{FIXTURE}"\n'
        "tokens = 64\nseq_len = 16\nbatch_size = 2\nw = 3\n"
        '[eval]\nsplit = "heldout"\nmax_chars = 200\n'
        '[[runs]]\nname = "a"\nvariant = "cyb-ap"\n'
    )
    (root / "bad.toml").write_text("out = [unclosed\n")
    return {
        "run": run,
        "ckpt": ckpt,
        "db_src": db,
        "truncated": trunc,
        "badtok": badtok,
        "unknown_variant": _checkpoint_with(ckpt, root / "unknown-variant", variant="nope"),
        "bad_w": _checkpoint_with(ckpt, root / "bad-w", w=99),
        "bad_psi": _checkpoint_with(ckpt, root / "bad-psi", psi=1.5),
        "nul": nul,
        "latin1": latin1,
        "empty": empty,
        "text": text,
        "file": root / "file",
        "garbage": garbage,
        "toml": toml,
        "bad_toml": root / "bad.toml",
        "nowhere": root / "does-not-exist",
        "remote": remote_code_checkpoint(ckpt, root / "remote", root / "MARKER"),
        "unknown_type": _with_config(ckpt, root / "unknown-type", model_type="nosuchmodel"),
        "reshaped": _with_config(ckpt, root / "reshaped", intermediate_size=700),
        "bigtok": _big_tokenizer(ckpt, root / "bigtok", 3000),
        "badcache": _truncated_cache(root),
        "import_prev": import_prev,
        "import_src": import_src,
        "loop": loop,
        "badname": badname,
        "fixture": FIXTURE,
    }


EVAL = "eval {ckpt} --text {text} --db {db}"
GEN = "generate {ckpt} --prompt Hello --max-new-tokens 2"
EXPORT = "export runs --db {db} --out {tmp}/out"
EXP = "experiment {toml} --db {db}"
TRAIN = "train --init {ckpt} --data-root " + str(FIXTURE) + " --out {tmp}/run --tokens 64 --w 3"

ROWS = [
    # ------------------------------------------------------------------ eval
    ("eval {truncated} --text {text} --db {db}", "damaged or truncated"),
    ("eval {ckpt} --text {text} --db {db} --device cuda:99", "no such CUDA device"),
    ("eval {badtok} --text {text} --db {db}", "tokenizer"),
    ("eval {unknown_variant} --text {text} --db {db}", "unknown loss variant 'nope'"),
    ("eval {bad_w} --text {text} --db {db}", "w must be in"),
    ("eval {bad_psi} --text {text} --db {db}", "psi must be in"),
    ("eval {nowhere} --text {text} --db {db}", "no run or checkpoint"),
    ("eval {ckpt} --text {nul} --db {db}", "NUL bytes (first at byte 70000)"),
    ("eval {ckpt} --text {latin1} --db {db}", "not UTF-8"),
    ("eval {ckpt} --text {empty} --db {db}", "empty"),
    ("eval {ckpt} --text {nowhere} --db {db}", "no text file"),
    (EVAL + " --seq-len 0", "--seq-len must be at least 1"),
    (EVAL + " --batch-size 0", "--batch-size must be at least 1"),
    (EVAL + " --max-chars -5", "--max-chars must be at least 1"),
    (EVAL + " --max-docs 0", "--max-docs must be at least 1"),
    (EVAL + " --mode adaptive --dk-threshold 1.5", "--dk-threshold must be in [0, 1]"),
    (EVAL + " --lock-timeout -1", "--lock-timeout must be at least 0"),
    ("eval {ckpt} --text {text} --db {foreign}", "not a cyb database"),
    ("eval {ckpt} --text {text} --db {garbage}", "cannot open"),
    ("eval {ckpt} --text {text} --db {file}/cyb.duckdb", "is a file, not a folder"),
    ("eval {ckpt} --text {text} --db {tmp}", "is a directory"),
    ("eval {ckpt} --split nosuch --data-root " + str(FIXTURE) + " --db {db}", "nosuch"),
    # ------------------------------------------------------------------ generate
    ("generate {truncated} --prompt Hi", "damaged or truncated"),
    (GEN + " --device cuda:99", "no such CUDA device"),
    ("generate {unknown_variant} --prompt Hi", "unknown loss variant 'nope'"),
    ("generate {bad_w} --prompt Hi", "w must be in"),
    ("generate {nowhere} --prompt Hi", "no checkpoint"),
    (GEN + " --top-k -1", "--top-k must be at least 1"),
    (GEN + " --top-k 0", "--top-k must be at least 1"),
    (GEN + " --top-p 1.5", "--top-p must be in"),
    (GEN + " --temperature 0", "--temperature must be above 0"),
    (GEN + " --batch-size 0", "--batch-size must be at least 1"),
    ("generate {ckpt} --prompt Hi --max-new-tokens 0", "--max-new-tokens must be at least 1"),
    ("generate {ckpt} --prompt Hi --w 0", "--w must be at least 1"),
    ("generate {ckpt} --prompt Hi --w 99", "w must be in"),
    ("generate {ckpt} --prompt-file {latin1}", "not UTF-8"),
    ("generate {ckpt} --prompt-file {nul}", "NUL"),
    ("generate {ckpt} --prompt-file {empty}", "is empty"),
    ("generate {ckpt} --prompt-file {nowhere}", "no prompt file"),
    # ------------------------------------------------------------------ export
    ("export runs --db {db} --out {file}/sub", "is a file, not a folder"),
    ("export runs --db {db} --out {file}", "is a file"),
    ("export runs --db {foreign} --out {tmp}/out", "not a cyb database"),
    ("export runs --db {garbage} --out {tmp}/out", "cannot open"),
    ("export runs --db {nowhere}.duckdb --out {tmp}/out", "no database"),
    (EXPORT + " --min-count 0", "--min-count must be at least 1"),
    (EXPORT + " --bins 0", "--bins must be at least 1"),
    ("export tokens --db {db} --out {tmp}/out --run-id nosuch", "no evaluation of run 'nosuch'"),
    ("export tokens --db {db} --out {tmp}/out", "needs --run-id"),
    # ------------------------------------------------------------------ experiment
    ("experiment {toml} --db {foreign}", "not a cyb database"),
    ("experiment {toml} --db {garbage}", "cannot open"),
    ("experiment {toml} --db {file}/cyb.duckdb", "is a file"),
    (EXP + " --set eval.max_chars=-5", "--max-chars must be at least 1"),
    (EXP + " --set eval.split=nosuch", "nosuch"),
    (EXP + " --set grid.regimes=['9x9']", "unknown data regime"),
    ("experiment {nowhere}.toml --db {db}", "no experiment config"),
    ("experiment {bad_toml} --db {db}", "not valid TOML"),
    # ------------------------------------------------------------------ app
    ("app --db {foreign}", "not a cyb database"),
    ("app --db {garbage}", "cannot open"),
    ("app --db {tmp}", "is a directory"),
    ("app --db {db} --device cuda:99", "no such CUDA device"),
    # ------------------------------------------------------------------ train (checks owned by train)
    ("train --init {truncated} --out {tmp}/run --tokens 64", "file not fully covered"),
    ("train --init {nowhere} --out {tmp}/run", "no checkpoint"),
    ("train --init {ckpt} --out {file}/run --tokens 64", "file"),
    (TRAIN + " --grad-accum 0", "grad-accum"),
    (TRAIN + " --device cuda:99", "no such CUDA device"),
    (TRAIN + " --batch-size 0", "batch-size"),
    (TRAIN + " --seq-len 0", "seq-len"),
    (TRAIN + " --ckpt-every 0", "ckpt-every"),
    (TRAIN + " --eval-every 0", "eval-every"),
    (TRAIN + " --collective-timeout 0", "--collective-timeout must be above 0"),
    # ------------------------------------------------------------------ checkpoints we refuse
    ("eval {remote} --text {text} --db {db}", "config.json has an `auto_map` field"),
    ("generate {remote} --prompt Hi", "config.json has an `auto_map` field"),
    ("train --init {remote} --out {tmp}/run --tokens 64", "`auto_map` field"),
    ("eval {unknown_type} --text {text} --db {db}", "`model_type` 'nosuchmodel'"),
    ("eval {reshaped} --text {text} --db {db}", "do not fit its config.json"),
    ("generate {reshaped} --prompt Hi", "do not fit its config.json"),
    ("train --init {reshaped} --out {tmp}/run --tokens 64", "do not fit its config.json"),
    ("eval {bigtok} --text {text} --db {db}", "--allow-resize"),
    ("generate {bigtok} --prompt Hi", "--allow-resize"),
    ("train --init {bigtok} --out {tmp}/run --tokens 64", "--allow-resize"),
    # ------------------------------------------------------------------ corpus folders
    ("data import {import_src} --out {import_prev}", "holds my-notes, not written by"),
    ("data import {import_src} --out {fixture}", "not written by `cyb data import`"),
    ("data import {import_src} --out .", "is the folder you are in"),
    ("data import {loop} --out {tmp}/c", "symbolic link loop"),
    ("data import {badname} --out {tmp}/c", "caf\\xe9.txt: the name is not UTF-8"),
    ("data mix --natural {fixture} --mixed {fixture}", "is the natural corpus"),
    ("data mix --natural {fixture} --mixed {fixture}/mixed", "lies inside the natural corpus"),
    ("data mix --natural {import_src}/.. --mixed {import_src}", "lies inside the natural"),
    ("data mix --natural {fixture} --mixed {import_prev}", "not written by `cyb data mix`"),
    (
        "data build --cache {badcache} --out {tmp}/c --no-fixture --no-mixed",
        "is truncated or damaged (EOFError",
    ),
]


def _db_state(path: Path) -> dict | bytes | None:
    """Row counts of a cyb database, the bytes of any other file, None where there is none."""
    if not path.is_file():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            return {
                t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in schema.TABLES
            }
    except duckdb.Error:
        return path.read_bytes()


@pytest.mark.parametrize("line,needle", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_changes_nothing(line, needle, inputs, tmp_path, capsys):
    paths = {k: str(v) for k, v in inputs.items()}
    paths["tmp"] = str(tmp_path)
    if "{db}" in line:
        paths["db"] = str(shutil.copy(inputs["db_src"], tmp_path / "cyb.duckdb"))
    if "{foreign}" in line:
        foreign = tmp_path / "theirs.duckdb"
        with duckdb.connect(str(foreign)) as con:
            con.execute(
                "CREATE TABLE meta (id INTEGER, note VARCHAR); INSERT INTO meta VALUES (1, 'x')"
            )
        paths["foreign"] = str(foreign)
    argv = line.format(**paths).split()
    dbs = [Path(paths[k]) for k in ("db", "foreign") if "{" + k + "}" in line]
    before = {p: _db_state(p) for p in dbs}
    files_before = sorted(os.listdir(tmp_path))

    code = main(argv)

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    command = " ".join(argv[:2] if argv[0] == "data" else argv[:1])
    assert lines[0].startswith(f"cyb {command}: error: "), err
    assert needle in lines[0], err
    assert {p: _db_state(p) for p in dbs} == before  # foreign: the same bytes; ours: same rows
    new = set(os.listdir(tmp_path)) - set(files_before)
    assert not {n for n in new if "staging" in n}  # no stray staging folder beside a database
    if argv[0] in ("eval", "export", "experiment", "app"):
        assert new == set(), f"{argv[0]} left {new}"  # nothing written before the check failed
    assert not (inputs["toml"].parent / "exp-runs").exists()  # experiment: no run started
    if argv[0] == "data":
        assert new == set(), f"{argv[0]} left {new}"
        assert (
            inputs["import_prev"] / "my-notes" / "keep.txt"
        ).read_text() == "the user's own file"
        assert sorted(os.listdir(inputs["import_prev"])) == [
            "IMPORT.json",
            "finetune.jsonl.gz",
            "heldout.jsonl.gz",
            "my-notes",
        ]
    assert not (inputs["remote"].parent / "MARKER").exists()  # no checkpoint code ever ran


@pytest.mark.parametrize(
    "line",
    ["eval {ckpt} --text {text} --db {tmp}/ro/cyb.duckdb", "export runs --db {db} --out {tmp}/ro"],
)
def test_read_only_folders_are_refused_before_work(line, inputs, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes through permissions: make the folder read-only for it too
        real = os.access

        def access(path, mode, **kw):
            inside = Path(path).resolve().is_relative_to(ro.resolve())
            return False if inside and mode & os.W_OK else real(path, mode, **kw)

        monkeypatch.setattr(os, "access", access)
    try:
        db = shutil.copy(inputs["db_src"], tmp_path / "cyb.duckdb")
        argv = line.format(ckpt=inputs["ckpt"], text=inputs["text"], tmp=tmp_path, db=db).split()
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not writable" in err[0], err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def _raised(fn):
    try:
        fn()
    except Exception as e:
        return e
    raise AssertionError("nothing raised")


def test_library_errors_become_one_line_and_bugs_keep_their_traceback(tmp_path):
    import errno

    from safetensors import SafetensorError
    from transformers import PreTrainedTokenizerFast

    from cyb_core.errors import user_message

    bad = tmp_path / "tokenizer.json"
    bad.write_text("{bad")

    cases = [
        (SafetensorError("incomplete metadata"), "damaged or truncated"),
        (_raised(lambda: duckdb.connect().execute("SELECT * FROM nowhere")), "database error"),
        (_raised(lambda: PreTrainedTokenizerFast(tokenizer_file=str(bad))), "tokenizer files"),
        (PermissionError(errno.EACCES, "Permission denied", "/x/out"), "/x/out; make it"),
        (OSError(errno.ENOSPC, "No space left on device", "/x"), "free some disk space"),
        (_raised(lambda: b"\xff".decode("utf-8")), "not UTF-8"),
        (_raised(lambda: json.loads("{bad")), "JSON file is malformed"),
        (_raised(lambda: open(tmp_path / "nope")), "no such file or directory"),
        (store.StoreError("no evaluation"), "no evaluation"),
    ]
    for e, needle in cases:
        message = user_message(e)
        assert message and needle in message and "\n" not in message, (e, message)
    for bug in (ZeroDivisionError("division by zero"), KeyError("x"), RuntimeError("boom")):
        assert user_message(bug) is None  # main() re-raises: a bug keeps its traceback
