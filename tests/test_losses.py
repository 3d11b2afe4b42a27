"""cyb_core.losses against a loop-based reference written from docs/method.md (float64)."""

import math

import pytest
import torch
import torch.nn.functional as F

from cyb_core import losses, variants, vocab
from cyb_core.losses import (
    compute,
    expected_pauses,
    greedy_pauses,
    log_p,
    parse_vector,
    step_quantities,
)
from cyb_core.vocab import apply_dk_prior

DK = 5
V = 9


def _random(B=2, T=3, W=4, scale=2.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(B, T, W, V, generator=g, dtype=dtype)).requires_grad_()
    targets = torch.randint(0, V - 1, (B, T), generator=g)
    targets[targets >= DK] += 1  # never the DK id
    return logits, targets


def _ratio(spec, n):
    v = [float(x) for x in spec.split(":")] if isinstance(spec, str) else list(spec)
    assert len(v) == n
    return [x / sum(v) for x in v]


def _log(x):
    return torch.log(torch.as_tensor(x, dtype=torch.float64))


def reference(
    variant,
    logits,
    targets,
    mask=None,
    steps=None,
    omega=None,
    gamma=1.0,
    gamma_kind="exp",
    rho=None,
    alpha=0.01,
):
    """Mean loss by plain loops over tokens and steps, with probabilities as in method.md."""
    B, T, W, _ = logits.shape
    per_token = []
    for b in range(B):
        for t in range(T):
            if (mask is not None and not mask[b, t]) or targets[b, t] == -100:
                continue
            n = W if steps is None else int(steps[b, t])
            y = int(targets[b, t])
            p = [torch.softmax(logits[b, t, i], -1) for i in range(n)]
            d = [p[i][DK] if i < n - 1 else 0.0 for i in range(n)]
            tt = [p[i][y] / (1 - p[i][DK]) for i in range(n)]  # DK renormalised away at every step
            om = (
                [0.0] * (W - 1) + [1.0]
                if omega is None or variant != "cyb-ap"
                else _ratio(omega, W)
            )
            om = om[: n - 1] + [
                sum(om[n - 1 :])
            ]  # the world stops at the last available step at the latest
            Om = [sum(om[i:]) for i in range(n)]
            s, prod = [], 1.0
            for i in range(n):
                s.append(prod * (d[i] * om[i] + (1 - d[i]) * Om[i]))
                prod = prod * d[i]
            g = [gamma**i if gamma_kind == "exp" else 1 - i * (1 - gamma) for i in range(n)]
            if variant in ("baseline", "tbys"):
                loss = -_log(tt[n - 1])
            elif variant == "control":
                loss = -_log(tt[0])
            elif variant == "every-step":
                loss = -sum(_log(tt[i]) for i in range(n)) / n
            elif variant == "cyb-ap":
                loss = -_log(sum(s[i] * g[i] * tt[i] for i in range(n)))
            else:
                r = _ratio(rho or "1:" * (W - 1) + "1", W)
                r = r[: n - 1] + [sum(r[n - 1 :])]
                if variant == "cyb-va":
                    loss = -sum(s[i] * _log(tt[i]) for i in range(n))
                    loss = loss + sum(s[i] * _log(s[i] / r[i]) for i in range(n) if s[i] > 0)
                else:
                    loss = -_log(sum(s[i] * tt[i] for i in range(n)))
                    loss = loss + alpha * sum(
                        r[i] * _log(r[i] / s[i]) for i in range(n) if r[i] > 0
                    )
            per_token.append(loss)
    return torch.stack(per_token).mean()


CASES = [
    ("tbys", {}),
    ("control", {}),
    ("every-step", {}),
    ("cyb-ap", {}),
    ("cyb-ap", {"omega": "4:1:1:4", "gamma": 0.9}),
    ("cyb-ap", {"omega": "1:0:0:1", "gamma": 0.8, "gamma_kind": "linear"}),
    ("cyb-ap", {"omega": [0.0, 1.0, 1.0, 0.0], "gamma": 0.5}),
    ("cyb-va", {}),
    ("cyb-va", {"rho": "1:2:3:4"}),
    ("cyb-dp", {"rho": "1:0:0:0", "alpha": 0.1}),
    ("cyb-dp", {"rho": "0:1:3:1", "alpha": 1.0}),
]


@pytest.mark.parametrize("variant,hp", CASES)
@pytest.mark.parametrize("ragged", [False, True])
def test_matches_reference_values_and_gradients(variant, hp, ragged):
    logits, targets = _random(seed=1)
    mask = steps = None
    if ragged:
        mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
        targets[1, 2] = -100
        steps = torch.tensor([[1, 2, 4], [3, 4, 2]])
    out = compute(variant, logits, targets, DK, mask=mask, steps=steps, **hp)
    ref = reference(variant, logits, targets, mask=mask, steps=steps, **hp)
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    (g_out,) = torch.autograd.grad(out.loss, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-8, atol=1e-12)


def test_w1_every_variant_is_cross_entropy_without_dk():
    logits, targets = _random(W=1, seed=2)
    keep = [v for v in range(V) if v != DK]
    y = targets.clone()
    y[y > DK] -= 1
    ce = F.cross_entropy(logits[:, :, 0, keep].reshape(-1, V - 1), y.flatten())
    for variant in variants.VARIANTS:
        out = compute(variant, logits, targets, DK)
        torch.testing.assert_close(out.loss, ce, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(compute("cyb-va", logits, targets, DK, rho=[1.0]).loss, ce)


def test_tbys_is_eq3_with_dk_certain_before_the_last_step():
    logits, targets = _random(seed=3)
    forced = logits.detach().clone()
    forced[:, :, :-1, DK] = 1e30  # d = 1 before the last step
    tbys = compute("tbys", logits, targets, DK).per_token
    torch.testing.assert_close(compute("cyb-ap", forced, targets, DK).per_token, tbys.detach())
    torch.testing.assert_close(
        tbys,
        -torch.log_softmax(
            logits[:, :, -1].detach().index_fill(-1, torch.tensor([DK]), -math.inf), -1
        ).gather(-1, targets[..., None])[..., 0],
    )


@pytest.mark.parametrize("omega", [None, "1:1:1:1", "4:1:1:4", "1:0:0:0", "0:0:1:0"])
def test_s_sums_to_one(omega):
    logits, targets = _random(seed=4)
    steps = torch.tensor([[1, 2, 3], [4, 2, 1]])
    for st in (None, steps):
        q = step_quantities(logits, targets, DK, steps=st, omega=omega)
        torch.testing.assert_close(q.log_s.exp().sum(-1), torch.ones(2, 3, dtype=torch.float64))
        if st is not None:  # nothing after the last available step, where d = 0
            beyond = torch.arange(4) >= st[..., None]
            assert torch.isneginf(q.log_s[beyond]).all()
            assert torch.isneginf(q.log_d[torch.arange(4) >= st[..., None] - 1]).all()


def test_dk_prior_moves_d_only():
    logits, targets = _random(seed=5)
    q0 = step_quantities(logits, targets, DK)
    q1 = step_quantities(apply_dk_prior(logits, DK, psi=0.9), targets, DK)
    torch.testing.assert_close(q1.log_t, q0.log_t)
    assert (q1.log_d[..., :-1] > q0.log_d[..., :-1]).all()
    flat = step_quantities(
        apply_dk_prior(torch.zeros(1, 1, 2, V), DK, psi=0.9), targets[:1, :1], DK
    )
    torch.testing.assert_close(flat.log_d[..., 0].exp(), torch.tensor([[0.9]]))


ROBUST = [
    ("baseline", {}),
    ("tbys", {}),
    ("cyb-ap", {}),
    ("cyb-ap", {"omega": "0:0:0:1"}),
    ("cyb-ap", {"omega": "1:0:0:1", "gamma": 0.0}),
    ("cyb-va", {"rho": "1:2:3:4"}),
    ("cyb-dp", {"rho": "1:0:0:0"}),
    ("cyb-dp", {"rho": "0:0:0:1", "alpha": 1.0}),
]


@pytest.mark.parametrize("variant,hp", ROBUST)
@pytest.mark.parametrize("regime", ["scale_1e4", "d_to_0", "d_to_1"])
def test_finite_in_extreme_regimes(variant, hp, regime):
    W = 1 if variant == "baseline" else 4
    base, targets = _random(
        W=W, scale=1e4 if regime == "scale_1e4" else 1.0, seed=6, dtype=torch.float32
    )
    logits = base.detach().clone()
    if regime != "scale_1e4":
        logits[..., DK] = -1e4 if regime == "d_to_0" else 1e4
    logits.requires_grad_()
    for steps in (None, torch.tensor([[1, 2, 4], [3, 4, 2]]).clamp_max(W)):
        out = compute(variant, logits, targets, DK, steps=steps, **hp)
        (g,) = torch.autograd.grad(out.loss, logits)
        assert torch.isfinite(out.loss) and torch.isfinite(out.per_token).all()
        assert torch.isfinite(g).all()
        assert all(torch.isfinite(m).all() for m in out.metrics.values())


def test_masked_tokens_are_excluded():
    logits, targets = _random(seed=7)
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    targets[1, 0] = -100
    out = compute("cyb-ap", logits, targets, DK, mask=mask)
    kept = mask.bool() & (targets != -100)
    assert (out.per_token[~kept] == 0).all()
    torch.testing.assert_close(out.loss, out.per_token[kept].mean())
    (g,) = torch.autograd.grad(out.loss, logits)
    assert (g[~kept] == 0).all()
    changed = logits.detach().clone()
    changed[~kept] = 100 * torch.randn_like(changed[~kept])
    torch.testing.assert_close(
        compute("cyb-ap", changed, targets, DK, mask=mask).loss, out.loss.detach()
    )


@pytest.mark.parametrize(
    "variant,hp",
    [
        ("tbys", {}),
        ("cyb-ap", {"omega": "1:1:1:1", "gamma": 0.9}),
        ("cyb-va", {"rho": "1:2:3:4"}),
        ("cyb-dp", {"rho": "1:0:2:1"}),
    ],
)
def test_steps_equal_truncated_logits(variant, hp):
    logits, targets = _random(seed=8)
    steps = torch.tensor([[1, 2, 3], [4, 3, 2]])
    per_token = compute(variant, logits, targets, DK, steps=steps, **hp).per_token
    for b in range(2):
        for t in range(3):
            n = int(steps[b, t])
            trunc = {}
            for key, value in hp.items():
                if key in ("omega", "rho"):
                    v = _ratio(value, 4)
                    value = v[: n - 1] + [sum(v[n - 1 :])]
                trunc[key] = value
            one = compute(
                variant,
                logits[b : b + 1, t : t + 1, :n],
                targets[b : b + 1, t : t + 1],
                DK,
                **trunc,
            )
            torch.testing.assert_close(per_token[b, t], one.loss)


def test_helpers():
    logits, targets = _random(seed=9)
    q = step_quantities(logits, targets, DK)
    s, d = q.log_s.exp(), q.log_d.exp()
    torch.testing.assert_close(
        expected_pauses(q.log_s), (s * torch.arange(4.0, dtype=s.dtype)).sum(-1)
    )
    torch.testing.assert_close(log_p(q), -compute("cyb-ap", logits, targets, DK).per_token)
    for b in range(2):
        for t in range(3):
            first = next((i for i in range(4) if d[b, t, i] < 0.5), 3)
            assert int(greedy_pauses(q.log_d)[b, t]) == first
    sure = logits.detach().clone()
    sure[..., DK] = 50.0
    assert (greedy_pauses(step_quantities(sure, targets, DK).log_d) == 3).all()
    out = compute("tbys", logits, targets, DK)
    torch.testing.assert_close(
        out.metrics["expected_pauses"], torch.tensor(3.0, dtype=torch.float64)
    )
    torch.testing.assert_close(out.metrics["nll"], out.loss.detach())


def test_ratio_strings_are_normalised():
    torch.testing.assert_close(
        parse_vector("4:1:1:4", 4), torch.tensor([0.4, 0.1, 0.1, 0.4], dtype=torch.float64)
    )
    torch.testing.assert_close(
        parse_vector([2, 2], 2, name="rho"), torch.tensor([0.5, 0.5], dtype=torch.float64)
    )
    torch.testing.assert_close(
        parse_vector(" 0 : 3 ", 2), torch.tensor([0.0, 1.0], dtype=torch.float64)
    )
    logits, targets = _random(seed=10)
    a = compute("cyb-ap", logits, targets, DK, omega="4:1:1:4").loss
    torch.testing.assert_close(
        a, compute("cyb-ap", logits, targets, DK, omega=[0.4, 0.1, 0.1, 0.4]).loss
    )


@pytest.mark.parametrize(
    "variant,hp,match",
    [
        ("cyb-ap", {"omega": "1:-1:1:1"}, ">= 0"),
        ("cyb-ap", {"omega": "0:0:0:0"}, "positive entry"),
        ("cyb-ap", {"omega": "1:1:1"}, "expected W = 4"),
        ("cyb-ap", {"omega": "a:b:c:d"}, "cannot parse"),
        ("cyb-ap", {"omega": [1.0, float("nan"), 1.0, 1.0]}, "finite"),
        ("cyb-ap", {"gamma": 1.5}, "gamma"),
        ("cyb-ap", {"gamma": 0.5, "gamma_kind": "linear"}, "negative at step 3"),
        ("cyb-ap", {"gamma_kind": "cubic"}, "gamma_kind"),
        ("cyb-va", {"rho": "1:0:1:1"}, "> 0"),
        ("cyb-dp", {"alpha": -1.0}, "alpha"),
        ("tbys", {"rho": "1:1:1:1"}, "does not take rho"),
        ("cyb-va", {"omega": "0:0:0:1"}, "does not take omega"),
        ("baseline", {}, "W = 1"),
        ("cyb-xx", {}, "valid: baseline, control, every-step, tbys, cyb-ap, cyb-va, cyb-dp"),
    ],
)
def test_invalid_inputs_raise(variant, hp, match):
    logits, targets = _random(seed=11)
    with pytest.raises(ValueError, match=match):
        compute(variant, logits, targets, DK, **hp)


def test_check_validates_without_data():
    losses.check("cyb-ap", 4, omega="4:1:1:4", gamma=0.99)
    losses.check("baseline", 1)
    for variant, W, hp in [
        ("cyb-va", 4, {"rho": "0:1:1:1"}),
        ("baseline", 4, {}),
        ("tbys", 4, {"alpha": 1.0}),
        ("nope", 4, {}),
        ("cyb-ap", 0, {}),
    ]:
        with pytest.raises(ValueError):
            losses.check(variant, W, **hp)


def test_invalid_steps_raise():
    logits, targets = _random(seed=12)
    with pytest.raises(ValueError, match="steps"):
        compute("cyb-ap", logits, targets, DK, steps=torch.full((2, 3), 5))


def test_chunked_equals_unchunked(monkeypatch):
    logits, targets = _random(B=3, T=5, seed=13)
    full = compute("cyb-dp", logits, targets, DK, rho="1:1:1:1")
    (g_full,) = torch.autograd.grad(full.loss, logits)
    monkeypatch.setattr(vocab, "LSE_CHUNK_BYTES", 7 * 4 * V)  # 7 rows a chunk, 60 rows in all
    chunked = compute("cyb-dp", logits, targets, DK, rho="1:1:1:1")
    (g_chunked,) = torch.autograd.grad(chunked.loss, logits)
    torch.testing.assert_close(chunked.per_token, full.per_token, rtol=0, atol=1e-14)
    torch.testing.assert_close(g_chunked, g_full, rtol=0, atol=1e-14)
    x = torch.randn(10, V, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z: vocab._VocabReduce.apply(z, DK, torch.zeros(z.shape[0], dtype=torch.long), 3)[0],
        (x,),
    )


def test_bf16_logits_keep_their_dtype_and_match_fp32():
    logits, targets = _random(seed=14, dtype=torch.float32)
    low = logits.detach().bfloat16().requires_grad_()
    out = compute("cyb-ap", low, targets, DK)
    assert out.loss.dtype == torch.float32
    (g,) = torch.autograd.grad(out.loss, low)
    assert g.dtype == torch.bfloat16
    ref = compute("cyb-ap", low.detach().float().requires_grad_(), targets, DK)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-5)


def test_control_scores_only_the_real_tokens_own_step():
    logits, targets = _random(seed=21)
    out = compute("control", logits, targets, DK)
    keep = [v for v in range(V) if v != DK]
    y = targets.clone()
    y[y > DK] -= 1
    ce = F.cross_entropy(logits[:, :, 0, keep].reshape(-1, V - 1), y.flatten())
    torch.testing.assert_close(out.loss, ce, rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(out.loss, logits)
    assert g[:, :, 1:].abs().max() == 0  # the pause steps are context, never scored
    assert out.metrics["expected_pauses"] == 0  # it answers at step 0
    with pytest.raises(ValueError, match="needs pauses"):
        losses.check("control", 1)


def test_every_variant_has_a_loss_and_a_known_readout():
    for v in variants.VARIANTS.values():
        assert callable(getattr(losses, v.loss)) and v.readout in variants.READOUTS
        assert set(v.hparams) <= set(variants.HPARAMS)
    assert variants.color("tbys-3") == variants.VARIANTS["tbys"].color
    assert variants.color("cyb-ap-time") == variants.VARIANTS["cyb-ap"].color
    assert variants.resolve_w("baseline", 4) == 1 and variants.resolve_w("control", 4) == 4


@pytest.mark.parametrize("variant", list(variants.VARIANTS))
def test_a_ruled_out_target_costs_inf_with_zero_gradient(variant):
    W = 1 if variant == "baseline" else 4
    logits, targets = _random(B=1, T=2, W=W, seed=31)
    with torch.no_grad():
        logits[0, 0, :, targets[0, 0]] = float("-inf")  # token 0: probability 0 at every step
    out = compute(variant, logits, targets, DK)
    assert out.per_token[0, 0] == float("inf") and torch.isfinite(out.per_token[0, 1])
    (g,) = torch.autograd.grad(out.per_token.sum(), logits)
    assert torch.isfinite(g).all() and g[0, 0].abs().max() == 0
    alive = compute(variant, logits[:, 1:], targets[:, 1:], DK).per_token
    torch.testing.assert_close(out.per_token[:, 1:], alive)
