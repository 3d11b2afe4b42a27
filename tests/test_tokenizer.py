from pathlib import Path

import pytest

from cyb_core import tokenizer as tok_lib

TOK = tok_lib.load(Path(__file__).resolve().parents[1] / "data" / "tokenizer")


@pytest.mark.parametrize("stem", ["wasn", "didn", "isn"])
@pytest.mark.parametrize("space", ["", " "])
def test_contractions_split_like_the_paper(stem, space):
    pieces = [
        TOK.decode([i]) for i in TOK(f"{space}{stem}'t", add_special_tokens=False)["input_ids"]
    ]
    assert pieces == [f"{space}{stem}", "'t"]


def test_special_tokens_are_single_reserved_ids():
    for i, name in enumerate(tok_lib.SPECIAL_TOKENS):
        assert TOK(name, add_special_tokens=False)["input_ids"] == [i]
        assert TOK.convert_ids_to_tokens(i) == name
    ids = tok_lib.special_ids(TOK)
    assert (ids["eot"], ids["pad"], ids["dk"]) == (0, 1, 2)
    assert ids["pauses"] == list(range(3, 10))
    assert len(TOK) == 8192


def test_special_tokens_inside_text_and_roundtrip():
    text = "He won.<dont_know><pause_1><pause_2> She didn't.<|endoftext|>"
    ids = TOK(text, add_special_tokens=False)["input_ids"]
    assert [2, 3, 4] == ids[ids.index(2) : ids.index(2) + 3]
    assert TOK.decode(ids) == text


def test_missing_tokenizer_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="cyb tokenizer"):
        tok_lib.load(tmp_path)
