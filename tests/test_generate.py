"""Generation (cyb_core.engine): the cached, batched decoding loops against full-sequence and
slow references, sampling options, the context limit and the `cyb generate` command."""

import argparse
import math
import warnings

import numpy as np
import pytest
import torch
from support import PROMPTS, VARIED, tiny_model, tokenizer
from support import SHORT_DOCS as DOCS

from cyb.commands.generate import register as add_generate_cli
from cyb_core import decoding, engine, pauses
from cyb_core import model as model_lib
from cyb_core.adaptive import adaptive_eval

ATOL = 1e-4  # cached vs full-sequence fp32 logits (observed differences ~1e-6)
pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder:
    """Replaces m.forward to keep the inputs and logits of every call the engine makes, and
    Context.select to follow the rows the batch drops as they finish."""

    def __init__(self, m, monkeypatch):
        self.m, self.inner, self.calls, self.live = m, m.forward, [], None
        self.drops = 0
        m.forward = self
        select = decoding.Context.select

        def follow(ctx, keep):
            if ctx.model.forward is self:  # still recording
                self.live, self.drops = self.live[keep], self.drops + 1
            select(ctx, keep)

        monkeypatch.setattr(decoding.Context, "select", follow)

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
        if self.live is None:
            self.live = torch.arange(input_ids.shape[0])
        new = attention_mask[:, -input_ids.shape[1] :]
        self.calls.append((self.live, input_ids, position_ids, new, logits))
        return (logits[:, -logits_to_keep:] if logits_to_keep else logits), cache

    def rows(self):
        """Per row of the batch: its (ids, position ids, valid, logits) over every call it was in."""
        rows = []
        for b in range(len(self.calls[0][0])):
            at = [(c, int((c[0] == b).nonzero()[0, 0])) for c in self.calls if b in c[0]]
            rows.append([torch.cat([c[i][j] for c, j in at]) for i in range(1, 5)])
        return rows

    def check_against_full_sequence(self):
        """Each row's fed tokens, rerun without a cache in one forward: the same logits.

        The reference position ids follow the rule itself (the index of the real token, shared
        by its pauses), not what the engine passed. Returns each row's (ids, position ids).
        """
        del self.m.forward
        got = []
        for ids, pos, valid, logits in self.rows():
            keep = valid.bool()
            row = ids[keep]
            ref_pos = (~torch.isin(row, torch.tensor(self.m.pause_ids))).cumsum(0) - 1
            with torch.no_grad():
                full, _ = self.m(row[None], position_ids=ref_pos[None])
            torch.testing.assert_close(logits[keep], full[0], atol=ATOL, rtol=0)
            got.append((ids, pos))
        return got


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_cached_logits_equal_full_sequence_logits(recipe, monkeypatch):
    m = tiny_model(3)
    rec = Recorder(m, monkeypatch)
    gens = engine.generate(
        m, PROMPTS, recipe=recipe, max_new_tokens=12, do_sample=True, temperature=2.0, **VARIED
    )
    rows = rec.check_against_full_sequence()
    assert len({tuple(g.pauses) for g in gens}) > 1 and len({k for g in gens for k in g.pauses}) > 1
    if recipe == "constant":  # one block of W positions per call after the prefill
        assert all(c[1].shape[1] == 3 for c in rec.calls[1:])
        # a token and its pauses share a position
        assert all((pos[-3:] == pos[-1]).all() for _, pos in rows)
    else:  # one position per row per call: the cache stays rectangular
        assert all(c[1].shape[1] == 1 for c in rec.calls)
        assert rec.drops  # rows that finished were dropped, and the rest still match
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


def gpt2_model(n_positions, w):
    """Learned absolute positions: a position id past n_positions would fail outright."""
    cfg = dict(model_type="gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=n_positions)
    tok = tokenizer()
    m = model_lib.from_config({**cfg, "vocab_size": len(tok)}, tok)
    return m.with_settings(w=w, variant="cyb-ap").eval()


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_context_counts_real_tokens_and_long_prompts_are_refused_or_cut(recipe):
    m = gpt2_model(16, w=3)
    prompt = " ".join(["the cat sat on the mat"] * 2)  # 12 tokens
    tok = tokenizer()
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
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
    rest = tok.decode(ids[1:])
    assert tok(rest, add_special_tokens=False)["input_ids"] == ids[1:]
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
