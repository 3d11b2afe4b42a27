"""`cyb lm-eval` and the `cyb` model type of lm-evaluation-harness, on tasks written here
(a local JSONL file: nothing is downloaded).

A W = 1 model scores exactly as lm-eval's own `hf` model: its <dont_know> logit is pinned far
below the rest (GPT-2's final LayerNorm bias gives every hidden state a constant component, and
the tied DK row reads only that one), so the DK-renormalised softmax of a CYB model and the plain
softmax of `hf` are the same distribution. With pauses (W = 4), dense scoring is checked
against the slow reference: one cached W-block per real token (decoding.constant_teacher_forced).
"""

import copy
import json
import math

import pytest
import torch
from support import ROOT

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from cyb.cli import main  # noqa: E402
from cyb_core import decoding, losses, variants  # noqa: E402
from cyb_core import model as model_lib  # noqa: E402
from cyb_core import tokenizer as tok_lib  # noqa: E402

QUESTIONS = [
    ("The cat sat on the", [" mat", " moon", " river"], 0),
    ("It was a bright cold day in", [" April", " the", " clocks"], 0),
    ("She walked to the", [" river", " bank", " sister"], 1),
    ("Alice did not know what to", [" say", " cat", " do"], 2),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A W = 1 GPT-2 with our tokenizer (DK pinned low), and a folder of two local tasks."""
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("lm_eval")
    tok = tok_lib.load(ROOT / "data" / "tokenizer")
    eot = tok.eos_token_id
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=eot, eos_token_id=eot,
    )  # fmt: skip
    torch.manual_seed(0)
    m = GPT2LMHeadModel(cfg)
    # the same weights, DK not pinned, as a CYB-AP checkpoint with W = 3: it asks for pauses
    paused = model_lib.CYBModel(copy.deepcopy(m), copy.deepcopy(tok))
    paused.with_settings(w=3, variant="cyb-ap").save(root / "paused")
    dk = tok_lib.special_ids(tok)["dk"]
    with torch.no_grad():
        m.transformer.ln_f.weight[0], m.transformer.ln_f.bias[0] = 0.0, 1.0  # h[0] = 1 always
        m.transformer.wte.weight[dk] = 0.0
        m.transformer.wte.weight[dk, 0] = -1000.0  # DK logit -1000: exp() is 0 in float32
    m.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")

    tasks = root / "tasks"
    tasks.mkdir()
    rows = [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS]
    data = tasks / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = (
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\ndoc_to_text: '{{question}}'\n"
    )
    (tasks / "cyb_tiny.yaml").write_text(
        "task: cyb_tiny\noutput_type: multiple_choice\n" + common
        + "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n"
    )  # fmt: skip
    (tasks / "cyb_tiny_gen.yaml").write_text(
        "task: cyb_tiny_gen\noutput_type: generate_until\n" + common
        + "doc_to_target: '{{choices[answer]}}'\n"
        "generation_kwargs:\n  until: ['.']\n  max_gen_toks: 3\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )  # fmt: skip
    return root


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    # lm-eval indexes its ~10k built-in task files on every run (a minute on a busy 2-core
    # machine); the tasks here come from --include_path alone
    from lm_eval.tasks import manager

    init = manager.TaskManager.__init__
    monkeypatch.setattr(
        manager.TaskManager,
        "__init__",
        lambda self, *a, **kw: init(self, *a, **{**kw, "include_defaults": False}),
    )


def run_lm_eval(setup, out: str, model: str, model_args: str, tasks="cyb_tiny") -> dict:
    """`cyb lm-eval ...` in this process; returns {task: [sample rows]} from --log_samples."""
    code = main(
        ["lm-eval", "--model", model, "--model_args", model_args, "--tasks", tasks,
         "--include_path", str(setup / "tasks"), "--device", "cpu", "--batch_size", "2",
         "--output_path", str(setup / out), "--log_samples"]
    )  # fmt: skip
    assert code == 0
    samples = {}
    for f in sorted((setup / out).rglob("samples_*.jsonl")):
        task = f.name.removeprefix("samples_").rsplit("_", 1)[0]
        samples[task] = [json.loads(ln) for ln in f.read_text().splitlines()]
    return samples


def loglikelihoods(rows) -> list[list[float]]:
    return [
        [float(r[0][0]) for r in row["resps"]] for row in sorted(rows, key=lambda r: r["doc_id"])
    ]


def test_w1_scores_exactly_as_lm_evals_own_hf_model(setup):
    ours = run_lm_eval(setup, "cyb", "cyb", f"pretrained={setup / 'model'}")["cyb_tiny"]
    hf = run_lm_eval(setup, "hf", "hf", f"pretrained={setup / 'model'}")["cyb_tiny"]
    a, b = loglikelihoods(ours), loglikelihoods(hf)
    assert len(a) == len(QUESTIONS) and all(len(x) == 3 for x in a)
    assert torch.tensor(a) == pytest.approx(torch.tensor(b), abs=1e-5, rel=1e-6)
    assert [r["acc"] for r in ours] == [r["acc"] for r in hf]
    # is_greedy too: the argmax of the same distribution
    greedy = lambda rows: [[r[0][1] for r in row["resps"]] for row in rows]  # noqa: E731
    assert greedy(sorted(ours, key=lambda r: r["doc_id"])) == greedy(
        sorted(hf, key=lambda r: r["doc_id"])
    )


def test_pauses_change_the_scores_and_generation_runs(setup):
    path = setup / "paused"
    w1 = loglikelihoods(run_lm_eval(setup, "w1", "cyb", f"pretrained={path},w=1")["cyb_tiny"])
    dense = run_lm_eval(
        setup, "w4", "cyb", f"pretrained={path},w=4,mode=dense", tasks="cyb_tiny,cyb_tiny_gen"
    )
    adaptive = run_lm_eval(setup, "w4a", "cyb", f"pretrained={path},w=4,mode=adaptive")
    d4, a4 = loglikelihoods(dense["cyb_tiny"]), loglikelihoods(adaptive["cyb_tiny"])
    for scores in (d4, a4):
        assert all(math.isfinite(x) and x < 0 for row in scores for x in row)
        assert (torch.tensor(scores) - torch.tensor(w1)).abs().max() > 1e-3  # pauses read
    gen = dense["cyb_tiny_gen"]
    assert len(gen) == len(QUESTIONS) and all(isinstance(r["resps"][0][0], str) for r in gen)


@pytest.mark.parametrize("w", [1, 3, 4])
def test_loglikelihood_against_the_slow_reference(setup, w):
    """simple_evaluate's entry point: CYBLM itself. Each continuation's log-probability is the
    sum over its tokens of log sum_i s_i t_i (CYB-AP's own stopping), computed here one cached
    W-block per token."""
    from cyb_core.lm_eval import CYBLM

    lm = CYBLM(pretrained=str(setup / "paused"), w=w, device="cpu", batch_size=3)
    reqs = [
        Instance("loglikelihood", {}, (q, c), i)
        for i, (q, cs, _) in enumerate(QUESTIONS)
        for c in cs
    ]
    got = lm.loglikelihood(reqs, disable_tqdm=True)
    m = lm.cyb
    for req, (ll, _) in zip(reqs, got, strict=True):
        ctx, cont = lm._encode_pair(*req.args)
        ids = torch.tensor([ctx + cont])
        logits = decoding.constant_teacher_forced(m, ids[:, :-1]).float()  # (1, T, W, V)
        q = losses.step_quantities(logits, ids[:, 1:], m.dk_id)
        q = losses.readout(q, variants.get(m.settings.variant).readout)
        ref = losses.log_p(q)[0, -len(cont) :].sum().item()
        assert ll == pytest.approx(ref, abs=1e-4)
    if w == 1:  # Recipe 2 with nothing to wait for is Recipe 1
        lm.mode = "adaptive"
        again = lm.loglikelihood(reqs, disable_tqdm=True)
        assert [x for x, _ in again] == pytest.approx([x for x, _ in got], abs=1e-5)


def test_bad_model_args_are_one_line(setup, capsys):
    code = main(
        ["lm-eval", "--model", "cyb", "--model_args", f"pretrained={setup / 'nope'}",
         "--tasks", "cyb_tiny", "--include_path", str(setup / "tasks"), "--device", "cpu"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("cyb lm-eval: error: ") and "nope" in err[-1]
