"""`cyb data import` of Hugging Face datasets: save_to_disk folders, Parquet and Arrow files and a
dataset id in the local hub cache (a cache laid out as the hub lays it, written here: nothing is
downloaded). benchmarks/bench_import.py shows the memory staying flat in the corpus size."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cyb.cli import main
from cyb_core.corpus import chunk, load_split
from cyb_core.hf_stream import piece_split

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()  # its bars would mix with the one-line errors on stderr

PARA = "It was a bright cold day in April, and the clocks were striking thirteen. "
# 40 documents; every fifth is long enough to be cut into several pieces, one is empty
TEXTS = [
    ("" if i == 7 else "\n\n".join([PARA * (3 + i % 4)] * (6 if i % 5 == 0 else 1)))
    for i in range(40)
]
ROWS = {"content": TEXTS, "n": list(range(40))}


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def pieces(root):
    return {
        name: load_split(name, root)
        for name in ("heldout", "finetune")
        if (root / f"{name}.jsonl.gz").exists()
    }


def expected_texts(label):
    """The pieces the .txt rule cuts from every non-empty row, as (id, text)."""
    out = []
    for i, t in enumerate(TEXTS):
        if t.strip():
            doc = {"doc_id": f"{label}:{i}", "source": "import", "title": label, "text": t}
            out += [(c["doc_id"], c["text"]) for c in chunk(doc)]
    return sorted(out)


def test_save_to_disk_folder(tmp_path, capsys):
    datasets.Dataset.from_dict(ROWS).save_to_disk(str(tmp_path / "ds"))
    code, out, err = run(
        ["data", "import", str(tmp_path / "ds"), "--out", str(tmp_path / "c"), "--text-field",
         "content", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "ds: 40 row(s), 39 document(s), 1 empty row(s) skipped" in out
    got = pieces(tmp_path / "c")
    rows = got["heldout"] + got["finetune"]
    assert sorted((r["doc_id"], r["text"]) for r in rows) == expected_texts("ds")
    for name, split_rows in got.items():  # each piece where its seeded hash puts it
        assert {piece_split(r["doc_id"], 0, 0.1, 0.0) for r in split_rows} == {name}
    manifest = json.loads((tmp_path / "c" / "IMPORT.json").read_text())
    assert manifest["sources"][0] | {"files": None} == {
        "source": "ds",
        "kind": "save_to_disk",
        "split": None,
        "files": None,
        "rows": 40,
        "docs": 39,
        "skipped": 1,
        "chars": sum(len(t) for t in TEXTS),
    }
    for name, info in manifest["files"].items():  # the checksums are of the files written
        data = (tmp_path / "c" / name).read_bytes()
        assert info["bytes"] == len(data) and info["docs"] == len(
            gzip.decompress(data).splitlines()
        )

    # the same command again gives the same bytes; another seed deals other pieces
    before = (tmp_path / "c" / "finetune.jsonl.gz").read_bytes()
    argv = ["data", "import", str(tmp_path / "ds"), "--out", str(tmp_path / "c")]
    assert run([*argv, "--text-field", "content", "--no-progress"], capsys)[0] == 0
    assert (tmp_path / "c" / "finetune.jsonl.gz").read_bytes() == before
    assert run([*argv, "--text-field", "content", "--seed", "1"], capsys)[0] == 0
    assert (tmp_path / "c" / "finetune.jsonl.gz").read_bytes() != before


def test_dataset_dict_split_and_parquet_and_arrow_files(tmp_path, capsys):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(ROWS),
            "test": datasets.Dataset.from_dict({"content": ["Only a test row.\n\nAnother."]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    code, _, err = run(
        ["data", "import", str(tmp_path / "dd"), "--out", str(tmp_path / "c1"), "--text-field",
         "content", "--split", "test", "--heldout", "0"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert [r["doc_id"] for r in load_split("finetune", tmp_path / "c1")] == ["dd/test:0#0000"]

    table = pa.table({"content": TEXTS, "n": list(range(40))})
    pq.write_table(table, tmp_path / "corpus.parquet", row_group_size=7)
    with (
        pa.OSFile(str(tmp_path / "corpus.arrow"), "wb") as f,
        pa.ipc.new_file(f, table.schema) as w,
    ):
        for batch in table.to_batches(max_chunksize=5):
            w.write_batch(batch)
    for name in ("corpus.parquet", "corpus.arrow"):
        out = tmp_path / name.replace(".", "-")
        code, _, err = run(
            ["data", "import", str(tmp_path / name), "--out", str(out), "--text-field",
             "content", "--no-progress"],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        rows = [r for rows in pieces(out).values() for r in rows]
        assert sorted((r["doc_id"], r["text"]) for r in rows) == expected_texts(name)


def test_a_dataset_in_the_local_hub_cache_and_nothing_downloaded(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "datasets--someone--tiny"
    snap = repo / "snapshots" / ("a" * 40)
    (snap / "data").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    pq.write_table(pa.table({"text": TEXTS}), snap / "data" / "train-00000-of-00001.parquet")
    pq.write_table(
        pa.table({"text": ["A held row."]}), snap / "data" / "test-00000-of-00001.parquet"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any attempt to reach the hub would fail loudly

    code, out, err = run(
        ["data", "import", "someone/tiny", "--out", str(tmp_path / "c"), "--no-progress"], capsys
    )
    assert code == 0, err
    assert "someone/tiny/train: 40 row(s)" in out
    rows = [r for rows in pieces(tmp_path / "c").values() for r in rows]
    assert sorted((r["doc_id"], r["text"]) for r in rows) == expected_texts("someone/tiny/train")
    manifest = json.loads((tmp_path / "c" / "IMPORT.json").read_text())
    assert manifest["sources"][0]["kind"] == "hub" and manifest["sources"][0]["split"] == "train"

    # an id that is not cached is not fetched without --download
    code, _, err = run(["data", "import", "someone/other", "--out", str(tmp_path / "d")], capsys)
    assert code == 1 and "--download" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()
    code, _, err = run(
        ["data", "import", "someone/other", "--out", str(tmp_path / "d"), "--download"], capsys
    )
    assert code == 1 and "HF_HUB_OFFLINE is set" in err and not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--text-field", "body"], "has no column 'body' (string columns: content)"),
        (["--text-field", "n"], "column 'n' is int64, not text"),
        (["--split", "dev"], "has no split"),
        (["--heldout", "1.5"], "must be fractions"),
    ],
)
def test_bad_dataset_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, needle):
    table = pa.table({"content": TEXTS, "n": list(range(40))})
    pq.write_table(table, tmp_path / "c.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(ROWS)}).save_to_disk(
        str(tmp_path / "dd")
    )
    src = tmp_path / ("dd" if "--split" in extra else "c.parquet")
    code, _, err = run(["data", "import", str(src), "--out", str(tmp_path / "o"), *extra], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "o").exists()


def test_mixing_datasets_and_text_files_is_refused(tmp_path, capsys):
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "c.parquet")
    (tmp_path / "a.txt").write_text("Some text.")
    argv = ["data", "import", str(tmp_path / "c.parquet"), str(tmp_path / "a.txt")]
    code, _, err = run([*argv, "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "cannot be mixed" in err and not (tmp_path / "o").exists()
    code, _, err = run(
        ["data", "import", str(tmp_path / "a.txt"), "--out", str(tmp_path / "o"), "--split", "x"],
        capsys,
    )
    assert code == 1 and "--text-field and --split apply to datasets" in err
