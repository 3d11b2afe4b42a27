import math

import numpy as np
import pytest
import torch
from support import DOCS, FIXTURE, tiny_model, tokenizer

from cyb_core.dense import dense_eval


def reference(m, text):
    """Loop over tokens: build the expanded sequence by hand, softmax in float64."""
    ids = [*m.tokenizer(text, add_special_tokens=False)["input_ids"], m.eot_id]
    W = m.settings.w
    seq, pos = [], []
    for t, x in enumerate(ids[:-1]):
        seq += [x, *m.pause_ids[: W - 1]]
        pos += [t] * W
    with torch.no_grad():
        logits, _ = m(torch.tensor([seq]), position_ids=torch.tensor([pos]))
    p = torch.softmax(logits[0].double(), -1)
    rows = []
    for t in range(len(ids) - 1):
        d = [p[t * W + i, m.dk_id].item() for i in range(W - 1)] + [0.0]
        tt = [(p[t * W + i, ids[t + 1]] / (1 - p[t * W + i, m.dk_id])).item() for i in range(W)]
        s = [math.prod(d[:i]) * (1 - d[i]) for i in range(W)]
        rows.append((d[:-1], tt, s, -math.log(sum(a * b for a, b in zip(s, tt, strict=True)))))
    return ids, rows


@pytest.mark.parametrize("w", [1, 3])
def test_dense_eval_matches_loop_reference(w):
    m = tiny_model(w)
    res = dense_eval(m, DOCS, seq_len=64, progress=False)
    for j, text in enumerate(DOCS):
        ids, rows = reference(m, text)
        sel = res.doc == j
        assert res.idx[sel].tolist() == list(range(len(ids) - 1))
        assert res.next_id[sel].tolist() == ids[1:]
        for k, (d, t, s, nll) in enumerate(rows):
            i = np.flatnonzero(sel)[k]
            np.testing.assert_allclose(res.d[i], d, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(res.t[i], t, rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(res.s[i], s, rtol=1e-4, atol=1e-6)
            assert res.nll[i] == pytest.approx(nll, rel=1e-4)
    np.testing.assert_allclose(res.s.sum(-1), 1.0, rtol=1e-5)
    assert np.all(res.expected_pauses <= w - 1 + 1e-6)


def test_windows_and_batching_do_not_change_tokens_seen():
    m = tiny_model(2)
    a = dense_eval(m, DOCS, seq_len=7, batch_size=1, progress=False)
    b = dense_eval(m, DOCS, seq_len=7, batch_size=5, progress=False)
    np.testing.assert_allclose(a.nll, b.nll, rtol=1e-5)
    np.testing.assert_array_equal(a.greedy_pauses, b.greedy_pauses)
    spans = [DOCS[j][s:e] for j, s, e in zip(a.doc, a.char_start, a.char_end, strict=True)]
    assert "".join(spans[: int((a.doc == 0).sum())]) == DOCS[0]


def test_baseline_perplexity_is_plain_cross_entropy():
    m = tiny_model(1, variant="baseline")
    res = dense_eval(m, DOCS[:1], seq_len=64, progress=False)
    ids = torch.tensor([[*m.tokenizer(DOCS[0])["input_ids"], m.eot_id]])
    with torch.no_grad():
        logits, _ = m(ids[:, :-1])
    logits[..., m.dk_id] = -math.inf
    ce = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
    assert res.ppl == pytest.approx(math.exp(ce.item()), rel=1e-5)
    assert res.correct.dtype == bool and (res.greedy_pauses == 0).all()


def test_tbys_reads_out_at_last_step():
    m = tiny_model(3, variant="tbys")
    res = dense_eval(m, DOCS[:1], seq_len=64, progress=False)
    np.testing.assert_allclose(res.nll, -np.log(res.t[:, -1]), rtol=1e-5)
    assert np.all(res.expected_pauses == 2)


def test_empty_text_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        dense_eval(tiny_model(2), ["  \n"], progress=False)


def test_long_documents_are_tokenized_in_pieces_with_the_same_tokens():
    """Cutting before a space between two words never changes byte-level BPE tokens: the ids
    and offsets of real text (punctuation, numbers, newlines, runs of spaces) tokenized in
    pieces of a few dozen characters equal one call on the whole text."""
    from cyb_core import corpus
    from cyb_core.dense import _cuts, doc_tokens

    tok = tokenizer()
    text = corpus.load_split("heldout", FIXTURE)[0]["text"][:6000]
    text += " 12 + 345 = 357.\n\n  Two  spaces, tabs\there; \u00fcber \u65e5\u672c\u8a9e."
    whole = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    for size in (17, 50, 400):
        cuts = _cuts(text, size)
        assert len(cuts) > 10 and cuts[0] == 0 and cuts[-1] == len(text)
        ids, offs = doc_tokens(tok, text, piece_chars=size)
        assert ids.tolist() == whole["input_ids"]
        assert [tuple(o) for o in offs.tolist()] == [tuple(o) for o in whole["offset_mapping"]]
    assert _cuts("x" * 100, 10) == [0, 100]  # no space to cut at: one piece


def test_streamed_scoring_of_a_long_text_equals_the_unchunked_reference(monkeypatch):
    """A text spanning ~15 tokenizer pieces and many windows and batches (streamed) scores
    exactly like the same text tokenized whole, and its first window like the loop reference."""
    from cyb_core import dense

    m = tiny_model(3)
    text = " ".join(DOCS * 4)
    monkeypatch.setattr(dense, "TOKENIZE_CHARS", 40)
    streamed = dense_eval(m, [text], seq_len=9, batch_size=2, progress=False)
    monkeypatch.setattr(dense, "TOKENIZE_CHARS", 10**9)
    unchunked = dense_eval(m, [text], seq_len=9, batch_size=7, progress=False)
    for f in ("idx", "token_id", "next_id", "char_start", "char_end", "greedy_pauses", "correct"):
        np.testing.assert_array_equal(getattr(streamed, f), getattr(unchunked, f))
    for f in ("d", "t", "s", "nll", "expected_pauses"):
        np.testing.assert_allclose(getattr(streamed, f), getattr(unchunked, f), rtol=1e-5)
    ids, rows = reference(m, text)
    assert streamed.next_id.tolist() == ids[1:]
    np.testing.assert_allclose(streamed.nll[:9], [r[3] for r in rows[:9]], rtol=1e-4)
