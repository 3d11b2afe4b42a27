"""Catch Your Breath losses (docs/method.md sections 2-3), computed in log space.

Logits are (B, T, W, V): W steps per real token (step 0 is the token itself, step i its
i-th pause). Everything is reduced once to (B, T, W) quantities - log d_i, log(1 - d_i),
log t_i, log s_i - and each variant is a few lines on top of them.

Recipe 2 (variable pauses) passes `steps` (B, T): token t has steps[t] steps, DK is
forced to 0 at step steps[t]-1 and later steps have s_i = 0. A distribution over steps
(omega, rho) is truncated to the available steps by moving the mass beyond the last
available step onto it, which is what computing the loss on the truncated logits with
W = steps[t] and that truncated vector gives.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from . import variants
from .vocab import NEG_INF, _VocabReduce, dk_prior_bias, lse_chunk_rows

IGNORE_INDEX = -100

VectorSpec = str | Sequence[float] | Tensor


@functools.lru_cache(maxsize=512)
def _device_constant(values: tuple, dtype: torch.dtype, device: str) -> Tensor:
    with torch.inference_mode(False):  # made under inference_mode, it could not serve autograd
        return torch.tensor(values, dtype=dtype, device=device)


def device_constant(values: Sequence | Tensor, dtype: torch.dtype, device) -> Tensor:
    """A small constant tensor (ids, omega, gamma, rho) made once per device, dtype and value.

    Building it with torch.tensor(..., device=cuda) at every step is a host-to-device copy from
    pageable memory, which waits for the GPU; a cached copy costs nothing. Never modify it.
    `values`: numbers or a CPU tensor (read on the host).
    """
    if isinstance(values, Tensor):
        values = values.tolist()  # a CPU tensor: no device sync
    return _device_constant(tuple(values), dtype, str(torch.device(device)))


@dataclass(frozen=True)
class LossOutput:
    loss: Tensor  # () mean of per_token over unmasked tokens
    per_token: Tensor  # (B, T), 0 at masked tokens
    metrics: dict[str, Tensor]  # detached scalars


@dataclass(frozen=True)
class StepQuantities:
    log_d: Tensor  # (B, T, W) log P(DK) at step i; -inf from the last available step on
    log_1md: Tensor  # (B, T, W) log(1 - d_i); 0 from the last available step on
    log_t: Tensor  # (B, T, W) log P(target | not DK), DK renormalised away at every step
    log_s: Tensor  # (B, T, W) log P(answer at step i) under the omega used; -inf if impossible
    steps: Tensor  # (B, T) long, steps available per token (1..W)

    def with_omega(self, omega: VectorSpec | None) -> StepQuantities:
        """The same quantities with log_s recomputed for another omega (cheap: no vocabulary work)."""
        om = None if omega is None else parse_vector(omega, self.log_d.shape[-1])
        return replace(self, log_s=_log_s(self.log_d, self.log_1md, self.steps, om))


# ----------------------------------------------------------------------------- hyperparameters


def parse_vector(
    spec: VectorSpec, W: int, *, allow_zeros: bool = True, name: str = "omega"
) -> Tensor:
    """'4:1:1:4', a sequence or a tensor of W non-negative weights -> float64 (W,) summing to 1."""
    try:
        if isinstance(spec, str):
            values = [float(part) for part in spec.split(":")]
        else:
            values = torch.as_tensor(spec, dtype=torch.float64).flatten().tolist()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{name}: cannot parse {spec!r}; expected a ratio like '4:1:1:4' or a sequence"
        ) from None
    v = torch.tensor(values, dtype=torch.float64)
    if v.numel() != W:
        raise ValueError(f"{name} has {v.numel()} entries ({spec!r}), expected W = {W}")
    if not torch.isfinite(v).all() or (v < 0).any():
        raise ValueError(f"{name} entries must be finite and >= 0, got {spec!r}")
    if v.sum() <= 0:
        raise ValueError(f"{name} must have a positive entry, got {spec!r}")
    if not allow_zeros and (v == 0).any():
        raise ValueError(f"{name} entries must all be > 0, got {spec!r}")
    return v / v.sum()


def discount(gamma: float, W: int, kind: str = "exp") -> Tensor:
    """gamma_i for i = 0..W-1: exp gamma^i or linear 1 - i (1 - gamma); float64 (W,) in [0, 1]."""
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    i = torch.arange(W, dtype=torch.float64)
    if kind == "exp":
        return torch.tensor(float(gamma), dtype=torch.float64) ** i
    if kind == "linear":
        g = 1.0 - i * (1.0 - float(gamma))
        if g.min() < -1e-9:
            raise ValueError(
                f"linear discount with gamma = {gamma} is negative at step {int((g < 0).nonzero()[0])}"
            )
        return g.clamp_min(0.0)
    raise ValueError(f"gamma_kind must be 'exp' or 'linear', got {kind!r}")


def _truncate(v: Tensor, steps: Tensor) -> Tensor:
    """(W,) distribution -> (B, T, W): mass beyond the last available step moved onto it."""
    i = torch.arange(v.numel(), device=steps.device)
    last = (steps - 1)[..., None]
    tail = v.flip(0).cumsum(0).flip(0)  # sum_{j >= i} v_j
    return torch.where(i < last, v, torch.where(i == last, tail, torch.zeros_like(v)))


# ----------------------------------------------------------------------------- step quantities


def _log_s(log_d: Tensor, log_1md: Tensor, steps: Tensor, omega: Tensor | None) -> Tensor:
    """Eq. 2 in log space: log s_i = sum_{j<i} log d_j + log(d_i omega_i + (1 - d_i) Omega_i)."""
    W = log_d.shape[-1]
    i = torch.arange(W, device=log_d.device)
    if omega is None:
        omega = [0.0] * (W - 1) + [1.0]
    om = device_constant(omega, log_d.dtype, log_d.device)  # (W,), cached per device
    Om = om.flip(0).cumsum(0).flip(0)  # Omega_i = sum_{j >= i} omega_j
    log_om, log_Om = om.log(), torch.where(Om > 0, Om.log(), torch.zeros_like(Om))  # constants
    last = (steps - 1)[..., None]  # (B, T, 1)
    before = i < last  # (B, T, W) steps where DK is allowed
    # Zeros in place of -inf keep every gradient path finite; `live` puts the -inf back at the end.
    ld = torch.where(before, log_d, 0.0)
    stay = torch.where(before, log_1md, 0.0) + log_Om  # log (1 - d_i) Omega_i
    mix = torch.where(om > 0, torch.logaddexp(ld + torch.where(om > 0, log_om, 0.0), stay), stay)
    mix = torch.where(before, mix, log_Om)  # d = 0 at the last available step
    # log prod_{j<i} d_j, an exclusive cumulative sum
    log_prod = torch.cat([torch.zeros_like(ld[..., :1]), ld[..., :-1].cumsum(-1)], dim=-1)
    live = (i <= last) & (Om > 0)
    return torch.where(live, log_prod + mix, NEG_INF)


def step_quantities(
    logits: Tensor,
    targets: Tensor,
    dk_id: int,
    steps: Tensor | None = None,
    omega: VectorSpec | None = None,
    psi: float | None = None,
) -> StepQuantities:
    """log d, log(1 - d), log t, log s from logits (B, T, W, V) and targets (B, T).

    omega defaults to one-hot at the last step (the model's own stopping policy). Targets
    < 0 (e.g. -100) are read as token 0; the caller masks those tokens. psi: the logits come
    without the DK prior (CYBModel(..., prior=False)) and it is applied here, in fp32, as
    apply_dk_prior would; None: the logits already carry it (or none is wanted).
    """
    B, T, W, V = logits.shape
    if steps is None:
        steps = torch.full((B, T), W, dtype=torch.long, device=logits.device)
    rows = lse_chunk_rows(V, logits.device)
    prior = None if psi is None else dk_prior_bias(V, psi)
    tgt = targets.clamp_min(0)[:, :, None].expand(B, T, W).reshape(-1)
    lse_nodk, z_dk, z_y = (
        v.view(B, T, W) for v in _VocabReduce.apply(logits.reshape(-1, V), dk_id, tgt, rows, prior)
    )
    lse = torch.logaddexp(lse_nodk, z_dk)  # over the whole vocabulary
    before = torch.arange(W, device=logits.device) < (steps - 1)[..., None]
    log_d = torch.where(before, z_dk - lse, NEG_INF)
    log_1md = torch.where(before, lse_nodk - lse, 0.0)
    q = StepQuantities(log_d, log_1md, z_y - lse_nodk, log_d, steps)
    return q.with_omega(omega)


def log_p(q: StepQuantities) -> Tensor:
    """(B, T) log sum_i s_i t_i: the predictive log-probability if q uses omega one-hot last."""
    return torch.logsumexp(q.log_s + q.log_t, dim=-1)


def expected_pauses(log_s: Tensor) -> Tensor:
    """(B, T) E[S] = sum_i i s_i."""
    i = torch.arange(log_s.shape[-1], device=log_s.device, dtype=log_s.dtype)
    return (log_s.exp() * i).sum(-1)


def greedy_pauses(log_d: Tensor) -> Tensor:
    """(B, T) first step i with d_i < 0.5; the last (available) step has d = 0, so one exists."""
    return (log_d < math.log(0.5)).int().argmax(-1)  # argmax returns the first maximum


# ----------------------------------------------------------------------------- variants
# Each loss takes the quantities under omega one-hot last and returns the (B, T) loss; the
# registry (cyb_core.variants) names the function and the read-out that describes the
# variant's own answer policy (for metrics and evaluation).


def readout(q: StepQuantities, how: str) -> StepQuantities:
    """q with log_s replaced by the answer policy of a read-out: own, last or first step."""
    if how not in variants.READOUTS:
        raise ValueError(f"unknown read-out {how!r}; valid: {', '.join(variants.READOUTS)}")
    if how == "own":
        return q
    i = torch.arange(q.log_s.shape[-1], device=q.steps.device)
    at = (q.steps - 1)[..., None] if how == "last" else torch.zeros_like(q.steps)[..., None]
    return replace(q, log_s=torch.where(i == at, 0.0, NEG_INF).to(q.log_t.dtype))


def baseline_loss(q: StepQuantities) -> Tensor:
    if q.log_t.shape[-1] != 1:
        raise ValueError(
            f"baseline takes logits without pauses (W = 1), got W = {q.log_t.shape[-1]}"
        )
    return -q.log_t[..., 0]


def last_step_loss(q: StepQuantities) -> Tensor:
    # TBYS, eq. 3 with d = 1 before the last available step: s is one-hot there.
    return -log_p(readout(q, "last"))


def first_step_loss(q: StepQuantities) -> Tensor:
    # The control: the same expanded input, scored at the real token's own step only, so the
    # pauses are context but never a chance to wait.
    return -q.log_t[..., 0]


def every_step_loss(q: StepQuantities) -> Tensor:
    # Deep supervision over the steps: every available step predicts the target, so a base
    # trained this way has pause steps worth waiting for (or shows that none are).
    live = torch.arange(q.log_t.shape[-1], device=q.steps.device) < q.steps[..., None]
    return -torch.where(live, q.log_t, 0.0).sum(-1) / q.steps


def cyb_ap_loss(
    q: StepQuantities, omega: VectorSpec | None = None, gamma: float = 1.0, gamma_kind: str = "exp"
) -> Tensor:
    W = q.log_t.shape[-1]
    # -inf where gamma_i = 0; gamma_0 = 1; cached per device
    log_g = device_constant(discount(gamma, W, gamma_kind), q.log_t.dtype, q.log_t.device).log()
    qw = q if omega is None else q.with_omega(omega)
    return -torch.logsumexp(qw.log_s + log_g + q.log_t, dim=-1)


def _rho(rho: VectorSpec | None, q: StepQuantities, allow_zeros: bool) -> Tensor:
    """(B, T, W) prior over steps (uniform by default), truncated to each token's steps."""
    W = q.log_t.shape[-1]
    spec = rho if rho is not None else [1.0] * W
    v = parse_vector(spec, W, allow_zeros=allow_zeros, name="rho")
    return _truncate(device_constant(v, q.log_t.dtype, q.log_t.device), q.steps)


def cyb_va_loss(q: StepQuantities, rho: VectorSpec | None = None) -> Tensor:
    rho = _rho(rho, q, allow_zeros=False)
    live = q.log_s > NEG_INF  # exactly the available steps, where rho > 0
    ls, lr = torch.where(live, q.log_s, 0.0), torch.where(live, rho.log(), 0.0)
    # -sum s log t + KL(s || rho); s = 0 exactly where not live, so those terms vanish.
    return (q.log_s.exp() * (ls - lr - q.log_t)).sum(-1)


def cyb_dp_loss(q: StepQuantities, rho: VectorSpec | None = None, alpha: float = 0.01) -> Tensor:
    if not alpha >= 0.0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    rho = _rho(rho, q, allow_zeros=True)
    pos = rho > 0  # only available steps, where log s is finite
    kl = torch.xlogy(rho, rho) - rho * torch.where(pos, q.log_s, 0.0)  # KL(rho || s) terms
    return -log_p(q) + alpha * kl.sum(-1)


def check(variant: str, W: int, **hparams) -> None:
    """Raise the ValueError compute() would raise for these settings, before any data is seen."""
    if W < 1:
        raise ValueError(f"W must be >= 1, got {W}")
    if W < variants.get(variant).min_w:
        raise ValueError(
            f"{variant} needs pauses: W must be >= {variants.get(variant).min_w}, got {W}"
        )
    compute(variant, torch.zeros(1, 1, W, 2), torch.zeros(1, 1, dtype=torch.long), 1, **hparams)


def compute(
    variant: str,
    logits: Tensor,
    targets: Tensor,
    dk_id: int,
    mask: Tensor | None = None,
    steps: Tensor | None = None,
    *,
    psi: float | None = None,
    **hparams,
) -> LossOutput:
    """CYB loss of `variant` for logits (B, T, W, V) and targets (B, T).

    mask (B, T): False/0 drops a token, as does target -100. steps (B, T): Recipe 2; their
    values are checked here when they are on the CPU (on a GPU that would wait for it:
    pauses.expand_with_counts checks the counts on the CPU before they move). psi: logits
    without the DK prior, applied here in fp32 (step_quantities).
    Metrics (detached, means over kept tokens): expected_pauses, nll (-log p(y) under the
    variant's own answer policy, method.md section 5) and halting (W,), the mean s_i.
    """
    spec = variants.get(variant)
    unknown = sorted(set(hparams) - set(spec.hparams))
    if unknown:
        raise ValueError(
            f"{variant} does not take {', '.join(unknown)}; it takes: {', '.join(spec.hparams) or 'nothing'}"
        )
    if logits.dim() != 4 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, W, V) and targets (B, T), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    W = logits.shape[2]
    if steps is not None and (
        steps.shape != targets.shape
        or (steps.device.type == "cpu" and steps.numel() and (steps.min() < 1 or steps.max() > W))
    ):
        raise ValueError(f"steps must be (B, T) with values in 1..{W}")
    q = step_quantities(logits, targets, dk_id, steps, psi=psi)
    fn = globals()[spec.loss]
    with torch.no_grad():  # tokens whose target the model rules out (log t = -inf) cost +inf
        dead = ~torch.isfinite(fn(q, **hparams))
    # Their loss is +inf with a zero gradient: computed on log t = 0 (where finite), then set to
    # inf, since a zero upstream gradient times an infinite local derivative would give NaN.
    safe = replace(q, log_t=torch.where(dead[..., None], 0.0, q.log_t))
    per_token = torch.where(dead, float("inf"), fn(safe, **hparams))
    policy = readout(q, spec.readout)
    keep = targets != IGNORE_INDEX
    if mask is not None:
        keep = keep & mask.bool()
    per_token = torch.where(keep, per_token, 0.0)
    n = keep.sum().clamp_min(1)
    with torch.no_grad():
        metrics = {
            "expected_pauses": (expected_pauses(policy.log_s) * keep).sum() / n,
            "nll": -(torch.where(keep, log_p(policy), 0.0)).sum() / n,
            # (W,) the halting distribution: mean probability of answering at each step
            "halting": (policy.log_s.exp() * keep[..., None]).sum((0, 1)) / n,
        }
    return LossOutput(per_token.sum() / n, per_token, metrics)
