"""cyb_core.synthetic: deterministic lines, correct answers, tagging by pattern, mixed corpora."""

import re

import numpy as np
import pytest

from cyb_core import synthetic
from cyb_core.corpus import CorpusError, load_split


def test_documents_are_deterministic_and_seeded():
    a = synthetic.documents("heldout", 20_000, seed=0)
    assert a == synthetic.documents("heldout", 20_000, seed=0)
    assert a != synthetic.documents("heldout", 20_000, seed=1)
    assert a != synthetic.documents("finetune", 20_000, seed=0)
    assert sum(len(d["text"]) for d in a) >= 20_000
    assert {d["source"] for d in a} == {"synthetic"}


def test_every_answer_is_right_and_every_kind_appears():
    text = "\n".join(d["text"] for d in synthetic.documents("pretrain", 50_000))
    sums = re.findall(r"(\d+(?: \+ \d+)+) = (\d+)", text)
    assert len(sums) > 500
    for lhs, c in sums:
        ops = [int(x) for x in lhs.split(" + ")]
        assert sum(ops) == int(c) and all(0 <= x <= 999 for x in ops) and len(ops) in (2, 3)
    counts = re.findall(r"(?:How many|Count) (\w+) in ([\w ]+)[?:] (\d+)", text)
    assert len(counts) > 100
    for s, items, c in counts:
        assert items.split().count(s) == int(c)
    # operands cover 1, 2 and 3 digits
    digits = {len(x) for lhs, _ in sums for x in lhs.split(" + ")}
    assert digits == {1, 2, 3}


def test_classify_marks_answers_lines_and_leaves_prose_alone():
    text = "It was a dark night.\nShe wrote 12 + 7 = 19 on the board.\nHow many x in x o x? 2."
    codes = synthetic.classify(text)
    spans = {
        synthetic.CLASSES[k]: "".join(ch for ch, c in zip(text, codes, strict=True) if c == k)
        for k in range(3)
    }
    assert spans["answer"] == "192"
    assert spans["natural"] == "It was a dark night.\n"  # a synthetic line owns its newline
    assert "12 + 7 = " in spans["synthetic"] and "on the board." in spans["synthetic"]
    assert synthetic.classify("In 1999 + a year, 3 = three.").max() == 0  # not a sum
    assert synthetic.classify("Chapter 3 = the end").max() == 0


def _classify_reference(text: str) -> np.ndarray:
    """The plain per-match loop: mark each match's whole line, then its answer."""
    codes = np.zeros(len(text), dtype=np.int8)
    for pattern in synthetic.PATTERNS:
        for m in pattern.finditer(text):
            start = text.rfind("\n", 0, m.start()) + 1
            end = text.find("\n", m.end())
            end = len(text) if end < 0 else end + 1
            codes[start:end] = np.maximum(codes[start:end], 1)
            codes[m.start("c") : m.end("c")] = 2
    return codes


@pytest.mark.parametrize("joiner", ["\n", " "])  # " ": a whole book on one line
def test_classify_equals_the_per_match_reference(joiner):
    docs = synthetic.documents("heldout", 4000, seed=3)
    text = joiner.join(["Prose with ünïcode 𝔘 and 12 + 3 apples."] + [d["text"] for d in docs])
    expected = _classify_reference(text)
    assert (expected == 2).any() and (expected < 2).any()
    np.testing.assert_array_equal(synthetic.classify(text), expected)


def test_token_classes_take_the_highest_class_a_span_touches():
    text = "ab 12 + 7 = 19."
    start = np.array([0, 2, 10, 11, 14, 15])
    end = np.array([2, 5, 11, 14, 15, 15])  # "ab", " 12", "=", " 19", ".", end-of-text
    np.testing.assert_array_equal(synthetic.token_classes(text, start, end), [1, 1, 1, 2, 1, 0])


def test_mixed_corpus_interleaves_at_the_share(tmp_path):
    manifest = synthetic.write_mixed(
        tmp_path / "mixed", "data/fixture", share=0.3, splits=("finetune", "heldout")
    )
    assert manifest["files"]["heldout"]["docs"] > 0
    natural = load_split("finetune", "data/fixture")
    mixed = load_split("finetune", tmp_path / "mixed")
    assert [d for d in mixed if d["source"] != "synthetic"] == natural
    syn = sum(len(d["text"]) for d in mixed if d["source"] == "synthetic")
    assert syn / sum(len(d["text"]) for d in mixed) == pytest.approx(0.3, abs=0.02)
    # spread out: the first tenth of the documents already holds synthetic ones
    assert any(d["source"] == "synthetic" for d in mixed[: len(mixed) // 10 + 2])
    # rebuilding gives the same bytes
    before = (tmp_path / "mixed" / "finetune.jsonl.gz").read_bytes()
    synthetic.write_mixed(tmp_path / "mixed", "data/fixture", share=0.3, splits=("finetune",))
    assert (tmp_path / "mixed" / "finetune.jsonl.gz").read_bytes() == before
    with pytest.raises(ValueError, match="share"):
        synthetic.write_mixed(tmp_path / "bad", "data/fixture", share=1.0)
    with pytest.raises(CorpusError, match="not found"):
        synthetic.write_mixed(tmp_path / "bad", tmp_path / "nope")
    assert not (tmp_path / "bad").exists()  # nothing written before the checks
