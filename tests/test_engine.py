import argparse
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cyb.commands.generate import register as add_generate_cli
from cyb_core import decoding, engine, losses, pauses
from cyb_core import model as model_lib
from cyb_core import tokenizer as tok_lib
from cyb_core.adaptive import adaptive_eval
from cyb_core.dense import dense_eval

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["The cat", "Alice didn't know what to say to the", "Yes"]  # different lengths
DOCS = ["The patients wasn't happy, but they won.", "Alice didn't know. " * 4, "Yes."]
ATOL = 1e-4  # cached vs full-sequence fp32 logits (observed differences ~1e-6)
# Rows that pause differently: the tiny model's d spreads around this value.
VARIED = dict(readout="threshold", dk_threshold=0.08)
_TOKENIZER = tok_lib.load(ROOT / "data" / "tokenizer")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model gains nothing from threads, and threads that spin stall on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(w, psi=0.9, seed=0):
    m = model_lib.new_base(_TOKENIZER, "tiny", seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():  # make DK and the pauses matter: random, not tied-zero, rows
        m.model.get_input_embeddings().weight.normal_(0, 0.2)
    return m.with_settings(w=w, psi=psi, variant="cyb-ap").eval()


class Recorder:
    """Replaces m.forward to keep the inputs and logits of every call the engine makes."""

    def __init__(self, m):
        self.m, self.inner, self.calls = m, m.forward, []
        m.forward = self

    def __call__(
        self,
        input_ids,
        position_ids=None,
        attention_mask=None,
        cache=None,
        use_cache=False,
        logits_to_keep=0,
    ):
        # every position's logits are kept for the check; the engine gets what it asked for
        logits, cache = self.inner(input_ids, position_ids, attention_mask, cache, use_cache)
        self.calls.append(
            (input_ids, position_ids, attention_mask[:, -input_ids.shape[1] :], logits)
        )
        return (logits[:, -logits_to_keep:] if logits_to_keep else logits), cache

    def check_against_full_sequence(self):
        """Each row's fed tokens, rerun without a cache in one forward: the same logits.

        The reference position ids follow the rule itself (the index of the real token, shared
        by its pauses), not what the engine passed.
        """
        del self.m.forward
        ids, pos, valid, logits = (torch.cat([c[i] for c in self.calls], 1) for i in range(4))
        for b in range(ids.shape[0]):
            keep = valid[b].bool()
            row = ids[b, keep]
            ref_pos = (~torch.isin(row, torch.tensor(self.m.pause_ids))).cumsum(0) - 1
            with torch.no_grad():
                full, _ = self.m(row[None], position_ids=ref_pos[None])
            torch.testing.assert_close(logits[b, keep], full[0], atol=ATOL, rtol=0)
        return ids, pos


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_cached_logits_equal_full_sequence_logits(recipe):
    m = tiny_model(3)
    rec = Recorder(m)
    gens = engine.generate(
        m, PROMPTS, recipe=recipe, max_new_tokens=12, do_sample=True, temperature=2.0, **VARIED
    )
    ids, pos = rec.check_against_full_sequence()
    assert len({tuple(g.pauses) for g in gens}) > 1 and len({k for g in gens for k in g.pauses}) > 1
    if recipe == "constant":  # one block of W positions per call after the prefill
        assert all(c[0].shape[1] == 3 for c in rec.calls[1:])
        assert (pos[:, -3:] == pos[:, -1:]).all()  # a token and its pauses share a position
    else:  # one position per row per call: the cache stays rectangular
        assert all(c[0].shape[1] == 1 for c in rec.calls)
    slow = engine.generate(
        m,
        PROMPTS,
        recipe=recipe,
        max_new_tokens=12,
        do_sample=True,
        temperature=2.0,
        use_cache=False,
        **VARIED,
    )
    assert [g.token_ids for g in slow] == [g.token_ids for g in gens]
    assert [g.pauses for g in slow] == [g.pauses for g in gens]


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_batched_equals_one_prompt_at_a_time(recipe):
    m = tiny_model(4)
    batched = engine.generate(m, PROMPTS, recipe=recipe, max_new_tokens=10, **VARIED)
    alone = [
        engine.generate(m, [p], recipe=recipe, max_new_tokens=10, **VARIED)[0] for p in PROMPTS
    ]
    for a, b in zip(batched, alone, strict=True):
        assert (a.text, a.token_ids, a.pauses, a.finish_reason) == (
            b.text,
            b.token_ids,
            b.pauses,
            b.finish_reason,
        )
    assert len({tuple(g.pauses) for g in batched}) > 1  # the rows did pause differently


def slow_reference(m, prompt, n, recipe, threshold):
    """Generation without cache or batching: rebuild the expanded sequence with cyb_core.pauses
    (its own position ids) and rerun it whole at every step; pause while d_i >= threshold."""
    W, banned = m.settings.w, [m.dk_id, *m.pause_ids, m.pad_id]
    prompt_ids = m.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # Recipe 1 reads the whole prompt at once; Recipe 2 reads it token by token, pausing when asked.
    real = list(prompt_ids) if recipe == "constant" else prompt_ids[:1]
    forced = [] if recipe == "constant" else prompt_ids[1:]
    k = [0] * len(real)  # pauses after each real token (Recipe 2); the last one grows

    def last_logits():  # (L, V) of the expanded sequence
        ids = torch.tensor([real])
        if recipe == "constant":
            ex = pauses.expand_constant(ids, W, m.pause_ids)
        else:
            ex = pauses._expand(
                ids, torch.tensor([[j + 1 for j in k]]), W, m.pause_ids, None, m.pad_id, False
            )
        with torch.no_grad():
            logits, _ = m(
                ex.input_ids, position_ids=ex.position_ids, attention_mask=ex.attention_mask
            )
        return logits[0]

    out, counts = [], []
    while len(out) < n:
        if recipe == "constant":
            z = last_logits()[-W:]
            d = [*z.softmax(-1)[:-1, m.dk_id].tolist(), 0.0]
            S = next(i for i in range(W) if d[i] < threshold)
            z = z[S]
        else:
            z = last_logits()[-1]
            if k[-1] < W - 1 and z.softmax(-1)[m.dk_id] >= threshold:
                k[-1] += 1
                continue
            S = k[-1]
            if forced:  # still reading the prompt
                real.append(forced.pop(0))
                k.append(0)
                continue
        z[banned] = -math.inf
        out.append(int(z.argmax()))
        counts.append(S)
        if out[-1] == m.eot_id:
            break
        real.append(out[-1])
        k.append(0)
    return out, counts


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_generation_matches_slow_reference(recipe):
    m = tiny_model(3)
    gens = engine.generate(m, PROMPTS, recipe=recipe, max_new_tokens=8, **VARIED)
    for p, g in zip(PROMPTS, gens, strict=True):
        ids, counts = slow_reference(m, p, 8, recipe, VARIED["dk_threshold"])
        n = len(g.token_ids)
        assert (g.token_ids, g.pauses) == (ids[:n], counts[:n]) and n == len(ids) - (
            ids[-1] == m.eot_id
        )
    assert len({k for g in gens for k in g.pauses}) > 1


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


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_dk_and_pauses_are_never_emitted(recipe):
    m = tiny_model(3, psi=1 - 1e-12)  # DK is by far the likeliest output (logit ~ +36)
    inner = m.forward
    special = torch.tensor([*m.pause_ids, m.pad_id])

    def pause_loving(*args, **kwargs):  # pauses and padding next, far above every real token
        logits, cache = inner(*args, **kwargs)
        return logits.index_add(
            -1, special, torch.full((*logits.shape[:-1], len(special)), 15.0)
        ), cache

    m.forward = pause_loving
    gens = engine.generate(
        m, PROMPTS, recipe=recipe, max_new_tokens=10, do_sample=True, readout="sample"
    )
    banned = {m.dk_id, m.pad_id, *m.pause_ids}
    assert all(not banned & set(g.token_ids) for g in gens)
    assert not any("<dont_know>" in g.text or "<pause" in g.text for g in gens)
    assert all(k == 2 for g in gens for k in g.pauses)  # d ~ 1 before the last step


def test_stop_strings_max_tokens_and_seed():
    m = tiny_model(3)
    kw = dict(
        recipe="variable",
        max_new_tokens=12,
        do_sample=True,
        temperature=3.0,
        top_k=100,
        top_p=0.95,
        readout="sample",
        seed=3,
    )
    gens = engine.generate(m, PROMPTS, **kw)
    assert gens == engine.generate(m, PROMPTS, **kw)  # reproducible for a fixed seed
    assert any(
        g != h for g, h in zip(gens, engine.generate(m, PROMPTS, **{**kw, "seed": 4}), strict=True)
    )
    g = gens[0]
    assert g.finish_reason == "length" and len(g.token_ids) == len(g.pauses) == 12
    stop = "".join(g.pieces[3:5])
    cut = engine.generate(m, PROMPTS, **kw, stop=[stop])[0]  # same batch: the same random draws
    assert cut.finish_reason == "stop" and cut.text == g.text[: g.text.find(stop)]
    assert cut.token_ids == g.token_ids[: len(cut.token_ids)] and len(cut.token_ids) <= 5
    alone = engine.generate(m, PROMPTS[:1], **kw)[0]
    assert [(p, k) for p, k in engine.stream(m, PROMPTS[0], **kw)] == list(
        zip(alone.pieces, alone.pauses, strict=True)
    )


def test_render():
    g = engine.Generation(
        "", "The cat sat", [1, 2, 3], [0, 2, 1], ["The", " cat", " sat"], "length"
    )
    assert g.render() == "The[0] cat[2] sat[1]" and g.render(show_pauses=False) == "The cat sat"


def test_cli_generate(tmp_path, capsys):
    tiny_model(3).save(tmp_path / "ckpt")
    (tmp_path / "prompts.txt").write_text("The cat\nYes\n")
    parser = argparse.ArgumentParser()
    add_generate_cli(parser.add_subparsers())
    args = parser.parse_args(
        [
            "generate",
            str(tmp_path / "ckpt"),
            "--prompts",
            str(tmp_path / "prompts.txt"),
            "--recipe",
            "variable",
            "--max-new-tokens",
            "3",
            "--show-pauses",
            "--device",
            "cpu",
        ]
    )
    args.func(args)
    out = capsys.readouterr().out
    assert out.startswith("The cat") and "Yes" in out and out.count("[") == 6


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_gpu_matches_cpu_without_per_token_syncs(recipe):
    m = tiny_model(3)
    x = torch.tensor([m.tokenizer(DOCS[1], add_special_tokens=False)["input_ids"]])
    cpu_logits = decoding.constant_teacher_forced(m, x)
    cpu = engine.generate(m, PROMPTS, recipe=recipe, max_new_tokens=8)  # greedy: no near-ties
    m.to("cuda")
    torch.testing.assert_close(
        decoding.constant_teacher_forced(m, x).cpu(), cpu_logits, atol=ATOL, rtol=0
    )
    gpu = engine.generate(m, PROMPTS, recipe=recipe, max_new_tokens=8)
    assert [(g.token_ids, g.pauses) for g in gpu] == [(g.token_ids, g.pauses) for g in cpu]
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine.generate(
                m, ["The"], recipe=recipe, max_new_tokens=64, do_sample=True, readout="sample"
            )
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) < 32  # setup, one poll every 8 steps, the final copy; not one per token


@pytest.mark.gpu
def test_gpu_bf16_runs():
    m = tiny_model(3).to("cuda")
    for recipe in ("constant", "variable"):
        gens = engine.generate(
            m, PROMPTS, recipe=recipe, max_new_tokens=8, bf16=True, do_sample=True
        )
        assert all(len(g.pauses) == len(g.token_ids) for g in gens) and any(
            g.token_ids for g in gens
        )
    res = adaptive_eval(m, DOCS, seq_len=16, progress=False, bf16=True, dk_threshold=None)
    assert np.isfinite(res.nll).all() and res.pauses.max() <= 2


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


def gpt2_model(n_positions, w):
    """Learned absolute positions: a position id past n_positions would fail outright."""
    cfg = dict(model_type="gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=n_positions)
    m = model_lib.from_config({**cfg, "vocab_size": len(_TOKENIZER)}, _TOKENIZER)
    return m.with_settings(w=w, variant="cyb-ap").eval()


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_context_counts_real_tokens_and_long_prompts_are_refused_or_cut(recipe):
    m = gpt2_model(16, w=3)
    prompt = " ".join(["the cat sat on the mat"] * 2)  # 12 tokens
    ids = _TOKENIZER(prompt, add_special_tokens=False)["input_ids"]
    assert len(ids) == 12 and m.max_positions == 16
    # 12 + 4 real tokens = 16 positions, though 48 steps with the pauses: it fits
    g = engine.generate(m, [prompt], recipe=recipe, max_new_tokens=4, **VARIED)[0]
    assert len(g.token_ids) == 4 - (g.finish_reason == "eot") and g.truncated == 0
    with pytest.raises(ValueError, match=r"prompt 2 is 12 tokens.*context is 16.*last 11 tokens"):
        engine.generate(m, ["Yes", prompt], recipe=recipe, max_new_tokens=5)
    with pytest.raises(ValueError, match="lower max_new_tokens"):
        engine.generate(m, [prompt], recipe=recipe, max_new_tokens=16, truncate=True)
    cut = engine.generate(m, ["Yes", prompt], recipe=recipe, max_new_tokens=5, truncate=True)
    assert [c.truncated for c in cut] == [0, 1]
    rest = _TOKENIZER.decode(ids[1:])
    assert _TOKENIZER(rest, add_special_tokens=False)["input_ids"] == ids[1:]
    same = engine.generate(m, ["Yes", rest], recipe=recipe, max_new_tokens=5)
    assert [(c.token_ids, c.pauses) for c in cut] == [(c.token_ids, c.pauses) for c in same]


def test_cli_generate_warns_about_plain_checkpoints_and_cuts_long_prompts(tmp_path, capsys):
    m = gpt2_model(16, w=1)
    m.model.save_pretrained(tmp_path / "plain")  # no CYB settings, as a user saves theirs
    m.tokenizer.save_pretrained(tmp_path / "plain")
    parser = argparse.ArgumentParser()
    add_generate_cli(parser.add_subparsers())
    base = ["generate", str(tmp_path / "plain"), "--max-new-tokens", "3", "--device", "cpu"]

    def run(*extra):
        args = parser.parse_args([*base, *extra])
        args.func(args)
        return capsys.readouterr()

    got = run("--prompt", "The cat", "--recipe", "variable", "--show-pauses")
    assert "no CYB settings" in got.err and "prints [0]" in got.err
    assert got.out.count("[0]") == 3 and got.err.count("\n") == 2
    got = run("--prompt", "The cat", "--w", "3", "--psi", "0.5", "--show-pauses")
    assert got.err == "" and got.out.startswith("The cat")
    long = " ".join(["the cat sat on the mat"] * 3)  # 18 tokens
    with pytest.raises(ValueError, match="context is 16"):
        run("--prompt", long)
    got = run("--prompt", long, "--truncate")
    assert "prompt 1 lost its first 5 of 18 tokens" in got.err and got.out.startswith(long)


def test_bad_decoding_options_are_refused_before_work():
    m = tiny_model(2)
    for kw, msg in [
        (dict(stop=["ok", ""]), "empty stop string"),
        (dict(top_k=-1), "top_k"),
        (dict(min_p=1.5), "min_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
    ]:
        with pytest.raises(ValueError, match=msg):
            engine.generate(m, PROMPTS, max_new_tokens=2, **kw)


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
    k, v = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    for g, w in zip(ours.update(k, v), ref.update(k, v), strict=True):
        assert torch.equal(g, w)
    assert ours.get_seq_length() == ref.get_seq_length() == 173
