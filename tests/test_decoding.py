"""Decoding without generation: teacher-forced Recipe 1 against dense evaluation, adaptive
evaluation at its limits, the token picker against hand-written samplers, the growing cache."""

import math

import numpy as np
import pytest
import torch
from support import PROMPTS, VARIED, tiny_model
from support import SHORT_DOCS as DOCS

from cyb_core import decoding, engine, losses
from cyb_core.adaptive import adaptive_eval
from cyb_core.dense import dense_eval

pytestmark = pytest.mark.usefixtures("one_thread")


def test_recipe1_teacher_forced_reproduces_dense_eval():
    m = tiny_model(3)
    res = dense_eval(m, DOCS, seq_len=64, progress=False)
    ids = [[*m.tokenizer(d, add_special_tokens=False)["input_ids"], m.eot_id] for d in DOCS]
    T = max(map(len, ids)) - 1
    x = torch.full((len(ids), T + 1), m.pad_id)
    mask = torch.zeros_like(x)
    for b, row in enumerate(ids):  # right padding
        x[b, : len(row)], mask[b, : len(row)] = torch.tensor(row), 1
    logits = decoding.constant_teacher_forced(m, x[:, :-1], mask[:, :-1])  # (B, T, W, V)
    q = losses.step_quantities(logits, x[:, 1:], m.dk_id)
    for b, row in enumerate(ids):
        sel, n = res.doc == b, len(row) - 1
        np.testing.assert_allclose(q.log_d[b, :n, :-1].exp(), res.d[sel], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(q.log_t[b, :n].exp(), res.t[sel], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(q.log_s[b, :n].exp(), res.s[sel], rtol=1e-4, atol=1e-6)


def test_adaptive_eval_never_pauses_when_d_is_0():
    m = tiny_model(3, psi=1e-12)
    res = adaptive_eval(m, DOCS, seq_len=16, batch_size=4, dk_threshold=None, progress=False)
    assert (res.pauses == 0).all() and np.isnan(res.d[:, 1:]).all() and np.isnan(res.t[:, 1:]).all()
    assert res.d[:, 0].max() < 1e-6
    plain = dense_eval(
        m.with_settings(w=1), DOCS, seq_len=16, progress=False
    )  # no pauses in the context
    np.testing.assert_allclose(res.nll, plain.nll, rtol=1e-4)


@pytest.mark.parametrize("dk_threshold", [0.5, None])
def test_adaptive_eval_always_takes_w_minus_1_pauses_when_d_is_1(dk_threshold):
    m = tiny_model(3, psi=1 - 1e-12)
    res = adaptive_eval(
        m, DOCS, seq_len=16, batch_size=4, dk_threshold=dk_threshold, progress=False
    )
    assert (res.pauses == 2).all() and (res.s[:, 2] == 1).all() and res.d.min() > 1 - 1e-6
    dense = dense_eval(m, DOCS, seq_len=16, progress=False)  # the same context: all pauses present
    np.testing.assert_allclose(res.t, dense.t, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(res.nll, -np.log(dense.t[:, -1]), rtol=1e-4)


def plain_greedy(m, prompt, n):
    """Reference decoding without pauses or cache: argmax over the non-special tokens."""
    ids = m.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    out = []
    for _ in range(n):
        with torch.no_grad():
            z = m(torch.tensor([ids + out]))[0][0, -1]
        z[[m.dk_id, *m.pause_ids, m.pad_id]] = -math.inf
        if int(z.argmax()) == m.eot_id:
            break
        out.append(int(z.argmax()))
    return out


def test_w1_equals_plain_decoding():
    m = tiny_model(1)
    res = adaptive_eval(m, DOCS, seq_len=16, batch_size=4, progress=False)
    dense = dense_eval(m, DOCS, seq_len=16, progress=False)
    assert (res.pauses == 0).all() and res.d.shape == (len(res.nll), 0)
    np.testing.assert_allclose(res.nll, dense.nll, rtol=1e-4)
    np.testing.assert_array_equal(res.correct, dense.correct)
    for recipe in ("constant", "variable"):
        gens = engine.generate(m, PROMPTS, recipe=recipe, max_new_tokens=8)
        assert [g.token_ids for g in gens] == [plain_greedy(m, p, 8) for p in PROMPTS]
        assert all(k == 0 for g in gens for k in g.pauses)


def test_adaptive_eval_fills_eval_result_and_is_reproducible():
    m = tiny_model(4)
    dense = dense_eval(m, DOCS, seq_len=7, progress=False)
    a = adaptive_eval(m, DOCS, seq_len=7, batch_size=3, dk_threshold=None, seed=1, progress=False)
    b = adaptive_eval(m, DOCS, seq_len=7, batch_size=3, dk_threshold=None, seed=1, progress=False)
    np.testing.assert_array_equal(a.pauses, b.pauses)
    assert len(set(a.pauses.tolist())) > 1
    for f in ("doc", "idx", "token_id", "next_id", "char_start", "char_end"):  # every target once
        np.testing.assert_array_equal(getattr(a, f), getattr(dense, f))
    steps = np.arange(4)
    assert (np.isnan(a.t) == (steps > a.pauses[:, None])).all()
    assert (np.isnan(a.d) == (steps[:3] > a.pauses[:, None])).all()
    np.testing.assert_array_equal(a.s, np.eye(4)[a.pauses])
    np.testing.assert_array_equal(a.expected_pauses, a.pauses)
    np.testing.assert_array_equal(a.greedy_pauses, a.pauses)
    np.testing.assert_allclose(a.nll, -np.log(a.t[np.arange(len(a.t)), a.pauses]), rtol=1e-5)
    # threshold mode: batch composition changes nothing, though rows pause differently
    one = adaptive_eval(
        m, DOCS, seq_len=7, batch_size=1, dk_threshold=VARIED["dk_threshold"], progress=False
    )
    many = adaptive_eval(
        m, DOCS, seq_len=7, batch_size=8, dk_threshold=VARIED["dk_threshold"], progress=False
    )
    np.testing.assert_array_equal(one.pauses, many.pauses)
    np.testing.assert_allclose(one.nll, many.nll, rtol=1e-5)
    assert len(set(one.pauses.tolist())) > 1


def hand_written_pick(z, banned, gen, do_sample, temperature, top_k, top_p):
    """The sampling code the engine had before it used transformers' processors."""
    z = z.index_fill(-1, banned, -math.inf)
    if not do_sample or temperature <= 0:
        return z.argmax(-1)
    z = z / temperature
    if top_k:
        z = z.masked_fill(z < z.topk(min(top_k, z.shape[-1]), -1).values[:, -1:], -math.inf)
    if top_p is not None and top_p < 1.0:
        zs, order = z.sort(-1, descending=True)
        p = zs.softmax(-1)
        drop = p.cumsum(-1) - p > top_p
        z = z.scatter(-1, order, zs.masked_fill(drop, -math.inf))
    return torch.multinomial(z.softmax(-1), 1, generator=gen)[:, 0]


@pytest.mark.parametrize(
    "kw",
    [
        dict(do_sample=False, temperature=1.0, top_k=None, top_p=None),
        dict(do_sample=True, temperature=0.7, top_k=None, top_p=None),
        dict(do_sample=True, temperature=1.5, top_k=20, top_p=None),
        dict(do_sample=True, temperature=1.0, top_k=None, top_p=0.8),
        dict(do_sample=True, temperature=2.0, top_k=50, top_p=0.9),
    ],
)
def test_picker_draws_what_the_hand_written_sampler_drew(kw):
    torch.manual_seed(0)
    z = torch.randn(64, 500) * 3  # (B, V): 64 rows of logits
    banned = torch.tensor([0, 2, 3, 7])
    ours = engine.Picker(banned, torch.Generator().manual_seed(5), **kw)
    ref_gen = torch.Generator().manual_seed(5)
    for _ in range(5):  # the same generator stream, draw after draw
        a, b = ours(z), hand_written_pick(z, banned, ref_gen, **kw)
        assert torch.equal(a, b) and not torch.isin(a, banned).any()


def test_repetition_penalty_and_min_p_match_their_definitions():
    torch.manual_seed(1)
    z = torch.randn(8, 50) * 2
    history = torch.randint(0, 50, (8, 6))
    banned = torch.tensor([49])
    pick = engine.Picker(banned, torch.Generator(), repetition_penalty=1.8, history=lambda: history)
    ref = z.clone()
    for b in range(8):  # CTRL's rule: seen tokens' logits divided (> 0) or multiplied (< 0)
        for i in set(history[b].tolist()):
            ref[b, i] = ref[b, i] / 1.8 if ref[b, i] > 0 else ref[b, i] * 1.8
    ref[:, 49] = -math.inf
    assert torch.equal(pick(z), ref.argmax(-1))
    p = z.softmax(-1)
    p[:, 49] = 0
    p = p / p.sum(-1, keepdim=True)
    keep = p >= 0.3 * p.max(-1, keepdim=True).values  # min-p: at least 0.3 x the top token
    draws = engine.Picker(banned, torch.Generator().manual_seed(0), do_sample=True, min_p=0.3)
    seen = torch.stack([draws(z) for _ in range(200)], 1)  # (8, 200)
    assert keep.gather(1, seen).all() and (keep.sum(-1) > 1).any()
    assert all(len(set(seen[b].tolist())) == int(keep[b].sum()) for b in range(8))


def test_growing_cache_layer_equals_concatenation_through_regrowth_and_batch_select():
    """decoding.GrowingLayer (in-place appends) against DynamicLayer's torch.cat, the reference."""
    from transformers.cache_utils import DynamicLayer

    torch.manual_seed(0)
    ours, ref = decoding.GrowingLayer(), DynamicLayer()
    for n in [5, 1, 1, 60, 1, 3, 100, 1]:  # past the first room of 64 and its doubling
        k, v = torch.randn(3, 2, n, 4), torch.randn(3, 2, n, 4)
        got, want = ours.update(k, v), ref.update(k, v)
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)
    keep = torch.tensor([2, 0])
    ours.batch_select_indices(keep), ref.batch_select_indices(keep)  # rebinds keys and values
    bufs = ours._bufs
    k, v = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    for g, w in zip(ours.update(k, v), ref.update(k, v), strict=True):
        assert torch.equal(g, w)
    assert ours._bufs is bufs  # the selected rows kept their room: appended in place
    assert ours.get_seq_length() == ref.get_seq_length() == 173


def count_drops(monkeypatch) -> list[int]:
    """Wraps Context.select: the list grows by the rows left each time the batch drops rows."""
    left, select = [], decoding.Context.select

    def counted(ctx, keep):
        left.append(len(keep))
        select(ctx, keep)

    monkeypatch.setattr(decoding.Context, "select", counted)
    return left


def never_drop(monkeypatch) -> None:
    monkeypatch.setattr(decoding.Context, "can_select", property(lambda self: False))


@pytest.mark.parametrize("on", ["cpu", "gpu"])
@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_dropping_finished_rows_changes_no_output(recipe, on, monkeypatch):
    m = tiny_model(3)
    if on == "gpu":  # rows dropped only at the GPU's polls, every 8 tokens' worth of steps
        monkeypatch.setattr(
            engine, "poll_every", lambda dev, per_token=1: decoding.GPU_POLL_EVERY * per_token
        )
    # row 0 stops after two tokens, the others run on (greedy: the tiny model repeats itself)
    kw = dict(recipe=recipe, max_new_tokens=16, stop=[" cat cat"], repetition_penalty=1.1)
    left = count_drops(monkeypatch)
    dropped = engine.generate(m, PROMPTS, **kw, **VARIED)
    drops = len(left)
    assert drops and left[0] < len(PROMPTS)
    never_drop(monkeypatch)
    kept = engine.generate(m, PROMPTS, **kw, **VARIED)
    assert len(left) == drops  # none with a cache that cannot drop rows
    assert [(g.token_ids, g.pauses, g.finish_reason) for g in dropped] == [
        (g.token_ids, g.pauses, g.finish_reason) for g in kept
    ]
    assert dropped[0].finish_reason == "stop" and dropped[1].finish_reason == "length"


def test_adaptive_eval_drops_finished_rows_and_records_the_same(monkeypatch):
    m = tiny_model(3)
    docs = ["Yes.", "The cat sat on the mat. " * 3, "Alice didn't know. " * 5]
    left = count_drops(monkeypatch)
    dropped = adaptive_eval(m, docs, seq_len=64, batch_size=3, dk_threshold=0.08, progress=False)
    assert left == [2, 1]  # the shortest document's row, then the middle one's
    never_drop(monkeypatch)
    kept = adaptive_eval(m, docs, seq_len=64, batch_size=3, dk_threshold=0.08, progress=False)
    for name in ("doc", "idx", "pauses", "correct"):
        np.testing.assert_array_equal(getattr(dropped, name), getattr(kept, name), err_msg=name)
    for name in ("nll", "d", "t"):  # a smaller batch may round differently in the last bit
        np.testing.assert_allclose(getattr(dropped, name), getattr(kept, name), rtol=1e-5)
    assert len(set(dropped.pauses.tolist())) > 1
