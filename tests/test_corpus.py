"""Offline tests for cyb_core.corpus: the pure pieces and the committed fixture."""

from pathlib import Path

import pytest

from cyb_core.corpus import CorpusError, chunk, dedup, load_split, split, split_text
from cyb_core.corpus_sources import clean_text, detokenize, parse_brown

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "fixture"

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
    assert len(split_text("finetune", FIXTURE)) > 100_000


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
