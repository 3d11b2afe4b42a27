import numpy as np
import pytest
from support import FIXTURE, ROOT

from analysis import pos
from analysis.brown_check import brown_agreement, normalize


@pytest.fixture(scope="module")
def nlp():
    return pos.load_nlp()  # cached: one spaCy load per test process


@pytest.fixture(scope="module")
def tokenizer():
    from cyb_core import tokenizer as tok_lib

    return tok_lib.load(ROOT / "data" / "tokenizer")


def model_tokens(tokenizer, text):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    offs = np.array([*enc["offset_mapping"], (len(text), len(text))])  # + the end-of-text row
    return pieces, offs


def test_alignment_by_first_non_space_character(nlp, tokenizer):
    text = "The patients wasn't happy, but they won.\n\nThey'll go."
    (words,) = pos.tag_texts([text], nlp)
    pieces, offs = model_tokens(tokenizer, text)
    ann = pos.align(text, offs[:, 0], offs[:, 1], words)
    got = {
        text[s:e]: (ann["word"][i], ann["tag"][i], ann["word_start"][i])
        for i, (s, e) in enumerate(offs[:-1])
    }
    assert got[" pat"] == ("patients", "NNS", True)  # this tokenizer: " pat" + "ients"
    assert got["ients"] == ("patients", "NNS", False)
    assert got[" wasn"] == ("was", "VBD", True)  # model: wasn + 't; spaCy: was + n't
    assert got["'t"] == ("n't", "RB", False)
    assert got[" won"] == ("won", "VBD", True)
    assert got["They"] == ("They", "PRP", True)
    assert ann["morph"][pieces.index("Ġpat")] == "Number=Plur"
    assert ann["upos"][pieces.index("Ġpat")] == "NOUN"
    for i, (s, e) in enumerate(offs):
        if not text[s:e].strip():  # "\n\n" and the end-of-text row
            assert ann["word"][i] is None and ann["word_start"][i] is None


def test_first_nonspace_and_covering():
    text = "  ab \n c"
    p = pos.first_nonspace(text, np.array([0, 2, 4, 5, 8]), np.array([3, 3, 6, 8, 8]))
    assert p.tolist() == [2, 2, -1, 7, -1]
    k = pos.covering(np.array([2, 7]), np.array([4, 8]), np.array([2, 3, 4, 7, -1]))
    assert k.tolist() == [0, 0, -1, 1, -1]


def test_long_documents_are_tagged_in_pieces(nlp, monkeypatch):
    text = "\n\n".join(f"Paragraph {i} has dogs and cats in it." for i in range(30))
    whole = pos.tag_texts([text], nlp)[0]
    monkeypatch.setattr(pos, "PIECE_CHARS", 100)
    assert len(pos.pieces(text)) > 5 and "".join(p for _, p in pos.pieces(text)) == text
    cut = pos.tag_texts([text], nlp)[0]
    assert [text[s:e] for s, e in zip(cut.start, cut.end, strict=True)] == list(cut.word)
    assert cut.start.tolist() == whole.start.tolist()
    assert np.mean(cut.tag == whole.tag) > 0.95  # context across a cut may change a tag or two
    assert cut.sent_start.sum() >= 30  # every paragraph starts a sentence
    assert not cut.space_after[list(cut.word).index("it")]  # "it." : no space before the period


def test_brown_tag_normalisation():
    assert normalize("nns") == "nns" and normalize("NN-TL") == "nn" and normalize("bedz*") == "bedz"
    assert normalize("pps+bez") == "pps" and normalize("fw-nn") is None and normalize("ap") is None


def test_brown_agreement_on_the_fixture(nlp):
    r = brown_agreement(FIXTURE, ROOT / "data" / "tokenizer", nlp=nlp)
    per = r["per_tag"].set_index("gold")
    assert r["docs"] == 4 and r["compared"] > 5000
    assert r["boundary_agreement"] > 0.95
    assert r["agreement"] > 0.93 and r["agreement_strict"] > 0.9
    assert per.loc["NNS", "rate"] > 0.95 and per.loc["NNS", "n"] > 400
    assert per.loc["DT", "rate"] > 0.97 and per.loc["VBD", "rate"] > 0.95
