import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from cyb_core import model as model_lib
from cyb_core import tokenizer as tok_lib
from cyb_core.losses import apply_dk_prior

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
