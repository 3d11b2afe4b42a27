import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from cyb_core import architecture, model_files
from cyb_core import model as model_lib
from cyb_core import tokenizer as tok_lib
from cyb_core.vocab import apply_dk_prior

TEXT = ["The patients wasn't happy, but they won. " * 20, "Alice didn't know what to say. " * 20]

CONFIGS = {
    "gpt2": dict(model_type="gpt2", n_layer=2, n_embd=32, n_head=2, n_positions=128),
    "llama": dict(
        model_type="llama",
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    ),
    "qwen2": dict(
        model_type="qwen2",
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
    ),
}


def plain_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer that knows nothing of the CYB tokens, like most hub tokenizers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@pytest.mark.parametrize("arch", CONFIGS)
def test_wrapper_adds_tokens_and_roundtrips_settings(arch, tmp_path):
    tok = plain_tokenizer()
    n_before = len(tok)
    m = model_lib.from_config({**CONFIGS[arch], "vocab_size": n_before}, tok)
    assert len(tok) == n_before + 1 + tok_lib.MAX_PAUSES + 1  # dk, pauses, pad
    assert m.vocab_size >= len(tok)
    assert len(set([m.dk_id, *m.pause_ids, m.pad_id])) == 9

    m.with_settings(w=4, psi=0.8, variant="cyb-ap", hparams={"omega": "0:0:0:1", "gamma": 0.99})
    m.save(tmp_path)
    assert list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.bin"))
    m2 = model_lib.load(tmp_path)
    assert m2.settings == m.settings
    assert (m2.dk_id, m2.pause_ids) == (m.dk_id, m.pause_ids)

    ids = torch.tensor([tok("The patients won")["input_ids"]])
    m.eval(), m2.eval()
    with torch.no_grad():
        a, _ = m(ids)
        b, _ = m2(ids)
    torch.testing.assert_close(a, b)


def test_logits_carry_dk_prior():
    tok = plain_tokenizer()
    m = model_lib.from_config({**CONFIGS["llama"], "vocab_size": len(tok)}, tok).eval()
    ids = torch.tensor([tok("they won")["input_ids"]])
    with torch.no_grad():
        raw = m.model(input_ids=ids).logits
        biased, _ = m.with_settings(psi=0.9)(ids)
    v = raw.shape[-1]
    shift = torch.full((v,), torch.log(torch.tensor(0.1 * v / (v - 1))).item())
    shift[m.dk_id] = torch.log(torch.tensor(0.9 * v)).item()
    torch.testing.assert_close(biased, raw + shift)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="w must be"):
        model_lib.CYBSettings(w=9)
    with pytest.raises(ValueError, match="psi"):
        model_lib.CYBSettings(psi=1.0)
    with pytest.raises(ValueError, match="preset"):
        model_lib.new_base(plain_tokenizer(), "huge")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        model_lib.load(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        model_lib.load(tmp_path)


def test_shared_pause_positions_are_not_read_as_packed_sequences():
    """A token and its pauses share a position id; attention must still be plainly causal."""
    tok = plain_tokenizer()
    m = model_lib.from_config({**CONFIGS["llama"], "vocab_size": len(tok)}, tok).eval()
    ids = torch.randint(0, len(tok), (1, 60))
    pos = torch.arange(20).repeat_interleave(3)[None]
    L = ids.shape[1]
    causal = torch.full((1, 1, L, L), float("-inf")).triu(1)
    with torch.no_grad():
        ours, _ = m(ids, position_ids=pos)
        explicit = m.model(input_ids=ids, position_ids=pos, attention_mask=causal).logits
    torch.testing.assert_close(ours, apply_dk_prior(explicit, m.dk_id, m.settings.psi))


def test_importing_the_core_changes_no_environment_variable():
    """Nothing in the core import path may set, change or remove a process-wide variable."""
    code = (
        "import os, pkgutil, importlib, json\n"
        "import cyb_core\n"
        "before = dict(os.environ)\n"
        "names = [m.name for m in pkgutil.iter_modules(cyb_core.__path__)]\n"
        "for n in names: importlib.import_module('cyb_core.' + n)\n"
        "print(json.dumps({'names': names, 'same': dict(os.environ) == before,\n"
        "  'offline': os.environ.get('HF_HUB_OFFLINE')}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"model", "engine", "hf", "train", "tokenizer"} <= set(got["names"])
    assert got["same"] and got["offline"] is None


def fake_hub_cache(root: Path, repo: str, checkpoint: Path) -> Path:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<rev>/files}."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    entry = root / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(rev)
    shutil.copytree(checkpoint, entry / "snapshots" / rev)
    return entry / "snapshots" / rev


def test_hub_ids_resolve_from_the_local_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    tok = plain_tokenizer()
    m = model_lib.from_config({**CONFIGS["llama"], "vocab_size": len(tok)}, tok)
    m.with_settings(w=3).save(tmp_path / "ckpt")
    snap = fake_hub_cache(tmp_path / "hub", "org/tiny", tmp_path / "ckpt")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the user's own setting
    monkeypatch.chdir(tmp_path)  # "org/tiny" is no directory here

    loaded = model_lib.load("org/tiny", cache_dir=tmp_path / "hub")
    assert loaded.settings.w == 3 and model_files.resolve("org/tiny", tmp_path / "hub") == snap
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # HF_HOME's cache
    assert model_files.resolve("org/tiny") == snap
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache|hf download"):
        model_lib.load("org/missing")
    from analysis.evaluation import resolve_target  # cyb eval: the cache, never the network

    target = resolve_target("org/tiny", db=tmp_path / "none.duckdb")
    assert target.checkpoint == snap and target.run_id == "org/tiny"
    with pytest.raises(ValueError, match="local Hugging Face cache"):
        resolve_target("org/missing", db=tmp_path / "none.duckdb")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):  # a path, never a hub id
        model_lib.load(tmp_path / "org" / "tiny")
    (tmp_path / "org" / "tiny").mkdir(parents=True)  # a local directory wins over the cache
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        model_lib.load("org/tiny")


def test_embeddings_grow_only_when_needed_and_never_shrink():
    tok = plain_tokenizer()
    n = len(tok)  # the wrapper adds 9 tokens: DK, 7 pauses, pad
    cfg = {**CONFIGS["qwen2"], "tie_word_embeddings": False}
    rows = lambda m: m.model.get_input_embeddings().weight.shape[0]  # noqa: E731
    padded = model_lib.from_config({**cfg, "vocab_size": 384}, plain_tokenizer())
    assert rows(padded) == padded.model.lm_head.weight.shape[0] == 384  # room enough: kept
    assert len(padded.tokenizer) == n + 9 and padded.dk_id == n and padded.vocab_size == 384
    tight = model_lib.from_config({**cfg, "vocab_size": n + 4}, plain_tokenizer())
    assert n + 4 == 304 and rows(tight) == 320  # padded (304 = 16 * 19): grown to a multiple
    exact = model_lib.from_config({**cfg, "vocab_size": n}, plain_tokenizer())
    assert rows(exact) == n + 9  # not padded: grown to the tokenizer
    again = model_lib.CYBModel(padded.model, padded.tokenizer)  # nothing to add: nothing done
    assert rows(again) == 384
    # the reference: resize_token_embeddings(len(tok)) would have shrunk the padded model
    with torch.no_grad():
        before = padded.model.get_input_embeddings().weight[: n + 9].clone()
    architecture.fit_embeddings(padded.model, n + 9, padded=True)
    torch.testing.assert_close(padded.model.get_input_embeddings().weight[: n + 9], before)


def test_models_that_ignore_position_ids_are_flagged_once(capsys):
    tok = plain_tokenizer()
    bloom = {"model_type": "bloom", "n_layer": 2, "hidden_size": 32, "n_head": 2}
    m = model_lib.from_config({**bloom, "vocab_size": len(tok)}, tok)
    assert m.ignores_position_ids and capsys.readouterr().err == ""  # w = 1: nothing to say
    m.with_settings(w=3)
    m.with_settings(w=4)
    err = capsys.readouterr().err
    assert err.count("ignores position_ids") == 1 and err.startswith("warning: bloom")
    assert m.positions_needed(10) == 40  # every pause takes a position of its own
    llama = model_lib.from_config({**CONFIGS["llama"], "vocab_size": len(tok)}, plain_tokenizer())
    llama.with_settings(w=4)
    assert not llama.ignores_position_ids and llama.positions_needed(10) == 10
    assert llama.max_positions == 128 and capsys.readouterr().err == ""


def test_plain_checkpoints_are_known_to_lack_cyb_settings(tmp_path):
    tok = plain_tokenizer()
    m = model_lib.from_config({**CONFIGS["gpt2"], "vocab_size": len(tok)}, tok)
    m.model.save_pretrained(tmp_path / "plain")  # as a user saves theirs: no "cyb" key
    m.tokenizer.save_pretrained(tmp_path / "plain")
    plain = model_lib.load(tmp_path / "plain")
    assert not plain.has_cyb_settings and plain.settings.w == 1
    assert "no CYB settings" in model_lib.settings_notes(plain)[0]
    assert model_lib.settings_notes(plain, w_given=True) == []
    m.save(tmp_path / "cyb")
    assert model_lib.load(tmp_path / "cyb").has_cyb_settings
