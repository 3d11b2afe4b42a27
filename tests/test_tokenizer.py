import pytest
import torch
from support import ROOT

from cyb_core import tokenizer as tok_lib

TOK = tok_lib.load(ROOT / "data" / "tokenizer")


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


@pytest.mark.parametrize("ckpt", ["base", "base-mixed", "tokenizer"])
def test_our_tokenizers_prepend_nothing(ckpt):
    """Shipped results stay as they are: our tokenizer has no BOS of its own."""
    from cyb_core import model as model_lib
    from cyb_core.packing import token_stream

    path = ROOT / "data" / ckpt
    tok = model_lib._load_tokenizer(path) if ckpt != "tokenizer" else TOK
    assert tok_lib.bos_ids(tok) == []
    texts = ["It wasn't me.", "Alice didn't know."]
    plain = [TOK(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert tok_lib.encode(tok, texts) == plain
    assert token_stream(texts, tok).tolist() == [*plain[0], 0, *plain[1], 0]


def test_bos_comes_from_the_tokenizers_own_post_processing():
    from tokenizers import processors

    inner = TOK.backend_tokenizer
    saved = inner.post_processor
    try:
        bos = tok_lib.EOT  # any special token will do for the check
        inner.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, 0)]
        )
        assert TOK("It")["input_ids"][0] == 0 and tok_lib.bos_ids(TOK) == [0]
        from cyb_core.dense import doc_tokens

        pairs = [doc_tokens(TOK, t) for t in ("It was", "")]
        ids = [i.tolist() for i, _ in pairs]
        offs = [list(map(tuple, o.tolist())) for _, o in pairs]
        assert ids[0][0] == 0 and offs[0][0] == (0, 0) and ids[1] == [0] and offs[1] == [(0, 0)]
        assert ids[0][1:] == TOK("It was", add_special_tokens=False)["input_ids"]
        assert [TOK.decode(i) for i in ids[0][1:]] == ["It", " was"] and offs[0][1:] == [
            (0, 2),
            (2, 6),
        ]
    finally:
        inner.post_processor = saved
    assert tok_lib.bos_ids(TOK) == []


def test_split_blocks_reuses_a_split_tokenised_before_only_for_the_same_text(tmp_path, monkeypatch):
    """The kept stream is the one a fresh tokenisation gives, and a changed text is tokenised
    again (slow reference: token_stream called each time)."""
    import gzip
    import json

    from cyb_core import packing

    def write(texts):
        with gzip.open(tmp_path / "pretrain.jsonl.gz", "wt", encoding="utf-8") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"doc_id": str(i), "text": t}) + "\n")

    calls = []
    real = packing.token_stream
    monkeypatch.setattr(packing, "token_stream", lambda t, tok: calls.append(1) or real(t, tok))
    monkeypatch.setattr(packing, "_LAST", None)
    write(["It wasn't me. " * 20, "Alice didn't know. " * 20])
    first = packing.split_blocks("pretrain", TOK, 8, tmp_path)
    first[:] = -1  # a caller writing into its blocks leaves the kept stream alone
    again = packing.split_blocks("pretrain", TOK, 8, tmp_path)
    assert len(calls) == 1
    texts = ["It wasn't me. " * 20, "Alice didn't know. " * 20]
    assert torch.equal(again, packing.pack(real(texts, TOK), 8))
    write(["It was me. " * 20, "Alice knew. " * 20])
    changed = packing.split_blocks("pretrain", TOK, 8, tmp_path)
    assert len(calls) == 2
    assert torch.equal(
        changed, packing.pack(real(["It was me. " * 20, "Alice knew. " * 20], TOK), 8)
    )
