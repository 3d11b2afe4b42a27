"""Bring your own model: tiny random GPT-2, Llama, Qwen2 (padded vocabulary), Gemma, OPT, Falcon
and GPT-NeoX checkpoints.

Each is built with `transformers`, saved with save_pretrained next to a tokenizer that knows
nothing of the CYB tokens (Llama and Gemma prepend BOS, as theirs do), fine-tuned a few steps
with cyb-ap (W = 3), generated from with pauses, then reloaded with AutoModelForCausalLM and
generated from through cyb_core.hf's logits processor.
"""

import gzip
import json
import re

import pytest
import torch
from support import ROOT
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, pipeline

from cyb_core import engine, packing, pauses
from cyb_core import model as model_lib
from cyb_core import tokenizer as tok_lib
from cyb_core.hf import CYBLogitsProcessor, cyb_logits_processor
from cyb_core.train import train
from cyb_core.train_config import TrainConfig
from cyb_core.vocab import apply_dk_prior

TEXT = [
    "The patients wasn't happy, but they won the case in the end. ",
    "Alice didn't know what to say to the cat, so she said nothing at all. ",
    "It was a bright cold day in April, and the clocks were striking thirteen. ",
    "She walked to the river and sat down on the bank by her sister. ",
]
DOCS = [" ".join(TEXT[(i + j) % 4] for j in range(6)) for i in range(24)]
PROMPTS = ["The cat", "Alice didn't know", "It"]
W = 3
SMALL = dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2)

# model config, special tokens (eos, bos or None, pad or None) and whether BOS is prepended
FAMILIES = {
    "gpt2": (
        dict(model_type="gpt2", n_layer=2, n_embd=32, n_head=2, n_positions=256),
        ("<|endoftext|>", None, None),
    ),
    "llama": (
        dict(model_type="llama", num_key_value_heads=2, max_position_embeddings=256, **SMALL),
        ("</s>", "<s>", None),
    ),
    "qwen2": (
        dict(model_type="qwen2", num_key_value_heads=1, max_position_embeddings=256, **SMALL),
        ("<|endoftext|>", None, None),
    ),
    "gemma": (
        dict(
            model_type="gemma",
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=256,
            **SMALL,
        ),
        ("<eos>", "<bos>", "<pad>"),
    ),
    # learned positions offset by 2, a tokenizer with BOS and <pad> of its own
    "opt": (
        dict(
            model_type="opt",
            hidden_size=32,
            ffn_dim=64,
            word_embed_proj_dim=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=256,
        ),
        ("</s>", "<s>", "<pad>"),
    ),
    # rotary, multi-query attention, parallel attention + MLP; no hard limit on positions
    "falcon": (
        dict(
            model_type="falcon",
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            alibi=False,
            max_position_embeddings=256,
        ),
        ("<|endoftext|>", None, None),
    ),
    # Pythia: partial rotary, parallel residual, untied head
    "gpt_neox": (
        dict(
            model_type="gpt_neox",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=256,
        ),
        ("<|endoftext|>", None, None),
    ),
}
QWEN_ROWS = 384  # Qwen2 pads its embeddings past the tokenizer (151936 rows, ~151650 tokens)


pytestmark = pytest.mark.usefixtures("one_thread")


def family_tokenizer(eos: str, bos: str | None, pad: str | None) -> PreTrainedTokenizerFast:
    """Byte-level BPE of ~300 ids without the CYB tokens; BOS prepended when the family has one."""
    specials = [t for t in (eos, bos, pad) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT, trainer=trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, bos_token=bos, pad_token=pad
    )


def save_family(name: str, path) -> PreTrainedTokenizerFast:
    """A tiny random checkpoint of the family, saved as a user would save theirs."""
    cfg, specials = FAMILIES[name]
    tok = family_tokenizer(*specials)
    rows = QWEN_ROWS if name == "qwen2" else len(tok)
    # the family's own ids; pad None where its tokenizer has none (cyb adds <pad> and sets it)
    ids = dict(eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    ids["pad_token_id"] = tok.pad_token_id
    config = model_lib.AutoConfig.for_model(**cfg, vocab_size=rows, **ids)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return tok


def write_corpus(root) -> None:
    root.mkdir()
    rows = [{"doc_id": f"d{i}", "text": t} for i, t in enumerate(DOCS)]
    with gzip.open(root / "finetune.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_generates_and_reloads(family, tmp_path):
    tok = save_family(family, tmp_path / "init")
    n_plain = len(tok)
    bos = tok_lib.bos_ids(tok)
    assert bos == ([tok.bos_token_id] if FAMILIES[family][1][1] else [])
    stream = packing.token_stream(DOCS[:2], tok)  # training text starts with the family's BOS
    assert stream[: len(bos)].tolist() == bos and (stream == tok.eos_token_id).sum() == 2

    write_corpus(tmp_path / "corpus")
    cfg = TrainConfig(
        out=str(tmp_path / "run"),
        init=str(tmp_path / "init"),
        variant="cyb-ap",
        w=W,
        hparams={"omega": "0:0:1", "gamma": 1.0},
        data_root=str(tmp_path / "corpus"),
        split="finetune",
        seq_len=16,
        batch_size=4,
        tokens=16 * 4 * 3,  # three optimiser steps
        val_blocks=2,
        eval_every=100,
        ckpt_every=100,
        device="cpu",
        bf16=False,
    )
    summary = train(cfg, progress=False)
    assert summary["steps"] == 3 and torch.isfinite(torch.tensor(summary["final_loss"]))
    final = tmp_path / "run" / "final"

    m = model_lib.load(final)
    assert m.settings.w == W and m.settings.variant == "cyb-ap" and m.has_cyb_settings
    rows = m.model.get_input_embeddings().weight.shape[0]
    if family == "qwen2":  # the new tokens went into the padding: nothing resized, nothing shrunk
        assert rows == QWEN_ROWS and len(m.tokenizer) == n_plain + 9 < rows
    else:
        added = 1 + tok_lib.MAX_PAUSES + (FAMILIES[family][1][2] is None)  # DK, pauses, pad
        assert rows == len(m.tokenizer) == n_plain + added
    assert max(m.dk_id, *m.pause_ids, m.pad_id) < len(m.tokenizer)
    banned = {m.dk_id, m.pad_id, *m.pause_ids, *range(len(m.tokenizer), rows)}
    for recipe in ("constant", "variable"):
        gens = engine.generate(
            m, PROMPTS, recipe=recipe, max_new_tokens=12, do_sample=True, readout="sample"
        )
        assert all(len(g.pauses) == len(g.token_ids) for g in gens)
        assert all(0 <= k <= W - 1 for g in gens for k in g.pauses)
        assert not banned & {i for g in gens for i in g.token_ids}
    assert any(g.token_ids for g in gens)

    # plain transformers: the checkpoint reloads as the family's own class
    hf_model = AutoModelForCausalLM.from_pretrained(final).eval()
    hf_tok = AutoTokenizer.from_pretrained(final)
    assert hf_model.config.model_type == family
    # the <pad> cyb added (or the family's own) is the model's pad id too
    assert hf_model.config.pad_token_id == hf_tok.pad_token_id is not None
    assert hf_model.get_input_embeddings().weight.shape[0] == rows
    procs = cyb_logits_processor(hf_model, hf_tok)
    enc = hf_tok(PROMPTS[:1], return_tensors="pt")
    assert enc["input_ids"][0, : len(bos)].tolist() == bos

    def sample(logits_processor):
        torch.manual_seed(0)
        out = hf_model.generate(
            **enc,
            max_new_tokens=60,
            do_sample=True,
            temperature=3.0,  # flat: a banned id would be drawn often without the processor
            top_k=0,
            pad_token_id=hf_tok.pad_token_id,
            logits_processor=logits_processor,
        )
        return out[0, enc["input_ids"].shape[1] :].tolist()

    assert banned & set(sample(None))  # the control: plain sampling does emit them
    ids = sample(procs)
    assert ids and not banned & set(ids)
    text = hf_tok.decode(ids, skip_special_tokens=False)
    assert "<pause" not in text and tok_lib.DK not in text and "<pad>" not in text
    if family == "gpt2":  # the pipeline takes the same processor
        pipe = pipeline("text-generation", model=hf_model, tokenizer=hf_tok)
        out = pipe(PROMPTS[0], logits_processor=procs, max_new_tokens=10, do_sample=False)
        assert out[0]["generated_text"].startswith(PROMPTS[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_step0_with_the_pauses_masked_is_a_plain_forward(family, tmp_path):
    """Pauses sit where the method puts them: with their columns masked out of attention, step 0
    of every real token sees exactly what a plain forward pass sees (same positions, same
    keys), so its logits equal the plain ones."""
    tok = save_family(family, tmp_path / "init")
    m = model_lib.load(tmp_path / "init", w=W).eval()
    assert not m.ignores_position_ids
    ids = torch.tensor([tok(" ".join(TEXT[:2]))["input_ids"]])  # (1, T), the family's BOS first
    ex = pauses.expand_constant(ids, W, m.pause_ids)
    mask = ex.attention_mask.masked_fill(ex.step > 0, 0)  # (1, T * W): pause columns off
    with torch.no_grad():
        paused, _ = m(ex.input_ids, position_ids=ex.position_ids, attention_mask=mask)
        plain, _ = m(ids)
        unmasked, _ = m(ex.input_ids, position_ids=ex.position_ids)
    step0 = ex.to_steps(paused)[:, :, 0]  # (1, T, V)
    torch.testing.assert_close(step0, plain, atol=1e-5, rtol=1e-5)
    # the control: with the pauses visible, later tokens read them and their logits move
    assert not torch.allclose(ex.to_steps(unmasked)[:, 1:, 0], plain[:, 1:], atol=1e-3)


def test_logits_processor_is_the_dk_prior_then_the_bans():
    tok = family_tokenizer("</s>", None, None)
    with pytest.raises(ValueError, match="no <dont_know> token"):
        CYBLogitsProcessor.from_model(None, tok)
    tok_lib.ensure_special_tokens(tok)
    config = model_lib.AutoConfig.for_model(**FAMILIES["llama"][0], vocab_size=len(tok) + 7)
    config.cyb = {"psi": 0.7}
    proc = CYBLogitsProcessor.from_model(type("M", (), {"config": config})(), tok)
    scores = torch.randn(3, len(tok) + 7)  # (B, V): V padded past the tokenizer
    got = proc(torch.zeros((3, 1), dtype=torch.long), scores)
    want = apply_dk_prior(scores, proc.dk_id, 0.7)
    ids = tok_lib.special_ids(tok)
    for i in [ids["dk"], *ids["pauses"], ids["pad"], *range(len(tok), len(tok) + 7)]:
        want[:, i] = -float("inf")
    torch.testing.assert_close(got, want)
    assert torch.isfinite(got[:, ids["eot"]]).all()
    tok.pad_token = tok.eos_token  # pad = eos, as many fine-tuned models set it: eos stays
    proc = CYBLogitsProcessor.from_model(type("M", (), {"config": config})(), tok)
    assert torch.isfinite(proc(None, scores)[:, ids["eot"]]).all()


def test_readme_python_example_prints_what_its_comments_say(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the example names data/base relative to the repository
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    first, hf_text = (p.replace("\\n", "\n") for p in re.findall(r'print\(.*\)  # "(.*?)"', code))
    assert out.startswith(first + "\n")  # the engine's first generation, pause counts and all
    assert out.endswith(hf_text + "\n")  # plain transformers through the logits processor


def test_plain_checkpoint_evaluates_with_w_and_psi(tmp_path, capsys):
    import duckdb

    from analysis.eval_inputs import EvalError
    from analysis.evaluation import run_eval

    save_family("gpt2", tmp_path / "plain")  # n_positions 256, no CYB settings
    (tmp_path / "a.txt").write_text(TEXT[1])
    kw = dict(text=tmp_path / "a.txt", db=tmp_path / "cyb.duckdb", progress=False)
    plain = run_eval(tmp_path / "plain", **kw)
    assert "no CYB settings" in capsys.readouterr().err
    paused = run_eval(tmp_path / "plain", w=3, psi=0.8, **kw)
    assert capsys.readouterr().err == ""
    assert plain["eval_id"].startswith("plain:") and paused["eval_id"].startswith(
        "plain.w3.psi0.8:"
    )
    assert plain["mean_expected_pauses"] == 0 < paused["mean_expected_pauses"]
    with duckdb.connect(str(tmp_path / "cyb.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT run_id, w_max FROM runs ORDER BY run_id").fetchall()
    assert rows == [("plain", 1), ("plain.w3.psi0.8", 3)]  # the first evaluation is kept
    with pytest.raises(EvalError, match="--w must be in 1..8"):
        run_eval(tmp_path / "plain", w=9, **kw)
    with pytest.raises(EvalError, match="--seq-len 300 needs 300 positions.*context is 256"):
        run_eval(tmp_path / "plain", seq_len=300, **kw)


@pytest.mark.parametrize("family", ["opt", "falcon"])
def test_train_past_the_context_is_one_line_and_writes_nothing(family, tmp_path, capsys):
    """OPT (learned positions: an IndexError mid-step) and Falcon (rotary: it would train on
    silently) both have 256 positions; --seq-len 300 is refused before the run folder exists,
    and the same --out then takes a run that fits."""
    from cyb.cli import main

    save_family(family, tmp_path / "init")
    write_corpus(tmp_path / "corpus")
    line = (
        f"train --init {tmp_path / 'init'} --data-root {tmp_path / 'corpus'} --out "
        f"{tmp_path / 'run'} --variant cyb-ap --w 2 --batch-size 2 --device cpu --no-progress"
    )
    code = main([*line.split(), "--seq-len", "300", "--tokens", "600"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "--seq-len 300 needs 300 positions but the model's context is 256" in err[0]
    assert not (tmp_path / "run").exists()

    code = main([*line.split(), "--seq-len", "8", "--tokens", "16", "--eval-every", "100"])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    # what a CPU run from --init does not use is not recorded as used
    assert cfg["tokenizer"] is None and cfg["bf16"] is False and cfg["seq_len"] == 8
    assert main([*line.split(), "--seq-len", "8", "--tokens", "16", "--eval-every", "100"]) == 0
