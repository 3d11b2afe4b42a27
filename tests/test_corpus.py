"""Offline tests for cyb_core.corpus: the pure pieces and the committed fixture."""

import io
from pathlib import Path

import pytest
from support import FIXTURE, ROOT

from cyb_core.corpus import CorpusError, chunk, load_split, require_split
from cyb_core.corpus_build import dedup, split
from cyb_core.corpus_import import import_corpus
from cyb_core.corpus_sources import clean_text, detokenize, parse_brown

BROWN_SNIPPET = (
    "\n\n\tThe/at jury/nn said/vbd ``/`` it's/pps+bez (/( very/ql )/) good/jj ''/'' ,/, "
    "Mr./np Smith's/np$ dog/nn ./.\n"
    "He/pps didn't/dod* agree/vb --/-- not/* at/in all/abn !/. !/.\n"
    "\n\n\tShe/pps said/vbd '/' no/at '/' 1/2/cd //in day/nn ./.\n"
)


def test_detokenize_quotes_punctuation_and_paragraphs():
    text, _ = detokenize(parse_brown(BROWN_SNIPPET))
    assert text == (
        "The jury said \"it's (very) good\", Mr. Smith's dog. "
        "He didn't agree -- not at all!\n\n"
        "She said 'no' 1/2 / day."
    )


def test_detokenize_spans_match_text():
    text, spans = detokenize(parse_brown(BROWN_SNIPPET))
    assert len(spans) == 32
    for start, end, word, _tag in spans:
        assert text[start:end] == word
    assert spans[3][2:] == ['"', "``"]  # quote mapped in the word, gold tag kept
    assert [s[3] for s in spans if s[2] == "didn't"] == ["dod*"]
    assert [s[2:] for s in spans if s[3] == "in" and s[2] == "/"] == [["/", "in"]]


def test_parse_brown_headline_is_own_paragraph():
    raw = "\n\nMerger/nn-hl proposed/vbn-hl \nHowever/wrb ,/, yes/rb ./.\nMore/ap ./.\n"
    text, _ = detokenize(parse_brown(raw))
    assert text == "Merger proposed\n\nHowever, yes. More."


def test_clean_text_unwraps_and_maps_backticks():
    raw = (
        "[Emma by Jane Austen 1816]\r\n\r\nVOLUME I\n\n\nShe said  `poor Miss\nTaylor.'  And ``so''\n"
        "it went -- on.\n   \n\n\n*** END OF THE PROJECT GUTENBERG EBOOK EMMA ***\nlicense text\n"
    )
    assert clean_text(raw) == "VOLUME I\n\nShe said 'poor Miss Taylor.' And \"so\" it went -- on."


def test_clean_text_nfc():
    assert clean_text("Cafe\u0301 au lait") == "Caf\u00e9 au lait"


def _doc(doc_id, source, words):
    return {"doc_id": doc_id, "source": source, "title": doc_id, "text": words}


def _prose(seed, n=400):
    import random

    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)]
    return " ".join(rng.choice(vocab) for _ in range(n))


def test_dedup_drops_near_copy_keeps_first():
    a = _prose(1)
    near = a.replace("w1 ", "w2 ", 3) + " extra tail words"
    docs = [
        _doc("austen/a", "austen", a),
        _doc("gutenberg/b", "gutenberg", _prose(2)),
        _doc("gutenberg/a-copy", "gutenberg", near),
    ]
    kept, dropped = dedup(docs)
    assert [d["doc_id"] for d in kept] == ["austen/a", "gutenberg/b"]
    assert dropped[0]["dropped"] == "gutenberg/a-copy" and dropped[0]["duplicate_of"] == "austen/a"
    assert dropped[0]["containment"] > 0.5


def test_dedup_keeps_distinct_docs():
    docs = [_doc(f"brown/c{i}", "brown", _prose(i)) for i in range(5)]
    kept, dropped = dedup(docs)
    assert len(kept) == 5 and dropped == []


def _paragraphs(seed, n):
    return "\n\n".join(_prose(seed * 1000 + i, 60) for i in range(n))


def test_chunk_respects_paragraph_boundaries():
    doc = _doc("gutenberg/x", "gutenberg", _paragraphs(3, 60))
    parts = chunk(doc)
    assert "\n\n".join(p["text"] for p in parts) == doc["text"]
    assert all(1000 <= len(p["text"]) <= 4500 for p in parts)
    assert parts[1]["doc_id"] == "gutenberg/x#0001"


def test_split_heldout_whole_and_sources_in_both():
    docs = [
        _doc(f"{src}/{i}", src, _paragraphs(i + 10 * k, 30))
        for k, src in enumerate(["austen", "gutenberg", "brown"])
        for i in range(3)
    ]
    held = ["austen/0", "brown/2"]
    out = split(docs, held, seed=0)
    assert [d["doc_id"] for d in out["heldout"]] == held
    assert out["heldout"][0]["text"] == docs[0]["text"]  # whole, not chunked
    train_ids = {d["doc_id"].split("#")[0] for s in ("pretrain", "finetune") for d in out[s]}
    assert not train_ids & set(held)
    for s in ("pretrain", "finetune"):
        assert {d["source"] for d in out[s]} == {"austen", "gutenberg", "brown"}
    n_pre, n_fine = len(out["pretrain"]), len(out["finetune"])
    assert 0.6 < n_pre / (n_pre + n_fine) < 0.8
    assert split(docs, held, seed=0) == out  # deterministic
    assert split(docs, held, seed=1) != out


def test_load_split_reads_fixture():
    for name in ("pretrain", "finetune", "heldout"):
        rows = load_split(name, FIXTURE)
        assert rows and all(set(r) == {"doc_id", "source", "title", "text"} for r in rows)
    assert {r["source"] for r in load_split("pretrain", FIXTURE)} == {
        "austen",
        "gutenberg",
        "brown",
    }
    assert len("\n\n".join(d["text"] for d in load_split("finetune", FIXTURE))) > 100_000


def test_load_split_missing_dir_names_build_command(tmp_path):
    with pytest.raises(CorpusError, match="cyb data build"):
        load_split("pretrain", tmp_path / "nope")


def test_fixture_gold_pos_spans_match_text():
    text = {d["doc_id"]: d["text"] for d in load_split("heldout", FIXTURE)}
    pos = load_split("heldout_brown_pos", FIXTURE)
    assert len(pos) >= 3
    for rec in pos:
        doc = text[rec["doc_id"]]
        assert len(rec["tokens"]) > 1000
        for start, end, word, tag in rec["tokens"]:
            assert doc[start:end] == word and tag


def test_parse_brown_collapses_doubled_question_marks():
    raw = "\tWhy/wrb do/do you/ppss worry/vb ?/. ?/.\n\tStop/vb !/. !/.\n"
    text, spans = detokenize(parse_brown(raw))
    assert text == "Why do you worry?\n\nStop!"
    assert [s[2] for s in spans].count("?") == 1


# ----------------------------------------------------------------------------- cyb data import


def _user_texts(root: Path) -> Path:
    """texts/: two long .txt documents (paragraphs), a .jsonl with two short ones, a hidden file."""
    texts = root / "texts"
    (texts / "sub").mkdir(parents=True)
    (texts / "a.txt").write_text(_paragraphs(1, 40), encoding="utf-8")
    (texts / "b.txt").write_text("\ufeff" + _paragraphs(2, 30).replace("\n", "\r\n"))
    (texts / "sub" / "notes.jsonl").write_text(
        '{"text": "first note", "id": 7}\n\n{"text": "second note"}\n', encoding="utf-8"
    )
    (texts / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: skipped, not an error
    return texts


def _rows(out: Path) -> dict[str, list[dict]]:
    return {p.name.split(".")[0]: load_split(p.name.split(".")[0], out) for p in out.glob("*.gz")}


def test_import_writes_disjoint_deterministic_splits(tmp_path):
    texts = _user_texts(tmp_path)
    m = import_corpus([str(texts)], tmp_path / "out", heldout=0.2, pretrain=0.3)
    rows = _rows(tmp_path / "out")
    assert set(rows) == {"heldout", "pretrain", "finetune"} and all(rows.values())
    ids = [d["doc_id"] for part in rows.values() for d in part]
    assert len(ids) == len(set(ids))  # every piece in exactly one split
    for name in ("a.txt", "b.txt"):
        own = sorted(
            (d for part in rows.values() for d in part if d["doc_id"].startswith(f"texts/{name}#")),
            key=lambda d: d["doc_id"],
        )
        want = (texts / name).read_text(encoding="utf-8-sig").replace("\r\n", "\n").strip()
        assert len(own) > 1 and "\n\n".join(d["text"] for d in own) == want  # BOM, CRLF gone
    notes = sorted(d["doc_id"] for part in rows.values() for d in part if "notes" in d["doc_id"])
    assert notes == ["texts/sub/notes.jsonl:1#0000", "texts/sub/notes.jsonl:3#0000"]
    n = len(ids)
    assert len(rows["heldout"]) == round(0.2 * n) and len(rows["pretrain"]) == round(0.3 * n)
    assert [f["file"] for f in m["sources"]] == [
        "texts/a.txt",
        "texts/b.txt",
        "texts/sub/notes.jsonl",
    ]

    # the same files named in another order give the same bytes; another seed another split
    files = [str(texts / "sub" / "notes.jsonl"), str(texts / "b.txt"), str(texts / "a.txt")]
    import_corpus(files, tmp_path / "again", heldout=0.2, pretrain=0.3)
    import_corpus(list(reversed(files)), tmp_path / "again2", heldout=0.2, pretrain=0.3)
    for f in ("heldout", "pretrain", "finetune"):
        name = f"{f}.jsonl.gz"
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "again2" / name).read_bytes()
    import_corpus([str(texts)], tmp_path / "out", heldout=0.2, pretrain=0.3, seed=1)
    assert _rows(tmp_path / "out")["heldout"] != rows["heldout"]

    # a rerun replaces the import whole: no pretrain split is left from the earlier one
    import_corpus([str(texts)], tmp_path / "out")
    assert sorted(_rows(tmp_path / "out")) == ["finetune", "heldout"]
    with pytest.raises(CorpusError, match="rerun `cyb data import` with --pretrain"):
        load_split("pretrain", tmp_path / "out")


def test_import_reads_stdin(tmp_path):
    stdin = io.BytesIO(b'{"text": "one"}\n{"text": "two"}\n')
    import_corpus(["-"], tmp_path / "out", heldout=0.5, stdin_format="jsonl", stdin=stdin)
    rows = _rows(tmp_path / "out")
    assert sorted(d["text"] for part in rows.values() for d in part) == ["one", "two"]


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("empty.txt", b"", "texts/zz/empty.txt is empty"),
        ("blank.jsonl", b"\n  \n", "texts/zz/blank.jsonl is empty"),
        (
            "latin.txt",
            "ok\ncaf\u00e9".encode("latin-1"),
            "latin.txt is not UTF-8 .byte 0xe9 on line 2",
        ),
        ("nul.txt", b"text\x00more", "nul.txt contains NUL bytes"),
        ("notes.md", b"# hi", "notes.md has an unknown extension"),
        ("bad.jsonl", b'{"text": "a"}\n{"text": \n', "bad.jsonl line 2 is not valid JSON"),
        (
            "field.jsonl",
            b'{"text": "a"}\n\n{"body": "b"}\n',
            'field.jsonl line 3 has no "text" field',
        ),
        ("list.jsonl", b'["text"]\n', 'list.jsonl line 1 has no "text" field'),
        ("num.jsonl", b'{"text": 3}\n', 'num.jsonl line 1: "text" must be a non-empty string'),
        ("ws.txt", b" \n\t\n", "ws.txt is empty"),
        ("bom.txt", "\ufeff\n".encode(), "bom.txt is empty"),
    ],
)
def test_import_checks_every_file_before_writing(tmp_path, name, content, needle):
    texts = _user_texts(tmp_path)
    out = tmp_path / "out"
    import_corpus([str(texts)], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (texts / "zz").mkdir()
    (texts / "zz" / name).write_bytes(content)  # sorted last: every other file was fine
    with pytest.raises(CorpusError, match=needle) as e:
        import_corpus([str(texts)], out)
    assert "\n" not in str(e.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(CorpusError, match=needle):
        import_corpus([str(texts)], tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "fresh.tmp").exists()


def test_import_refuses_bad_sources_and_targets(tmp_path):
    texts = _user_texts(tmp_path)
    cases = [
        (dict(sources=[str(tmp_path / "nope")]), "no such file or folder"),
        (dict(sources=[str(texts)], out=texts / "corpus"), "lies inside the input folder"),
        (dict(sources=[str(texts)], out=FIXTURE), "not written by `cyb data import`"),
        (dict(sources=[str(texts / "a.txt"), str(texts / "a.txt")]), "both named a.txt"),
        (dict(sources=[str(texts / "a.txt")], heldout=0.6, pretrain=0.5), "sum below 1"),
        (dict(sources=[str(texts / "sub" / "notes.jsonl")], heldout=0.5, pretrain=0.5), "sum"),
        (dict(sources=[str(texts / "sub")], heldout=0.5, pretrain=0.4), "too few to split"),
    ]
    for kw, needle in cases:
        kw.setdefault("out", tmp_path / "out")
        with pytest.raises(CorpusError, match=needle):
            import_corpus(**kw)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="holds no .txt or .jsonl"):
        import_corpus([str(tmp_path / "empty")], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_splits_name_the_command_that_makes_them(tmp_path):
    texts = _user_texts(tmp_path)
    with pytest.raises(CorpusError, match=f"run `cyb data import {texts} --out"):
        require_split("finetune", texts)  # a folder of plain files is not a corpus
    with pytest.raises(CorpusError, match="cyb data build"):
        require_split("finetune", tmp_path / "nothing")
    require_split("finetune", FIXTURE)
    require_split("heldout", ROOT / "data" / "mixed")
