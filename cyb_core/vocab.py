"""Reducing (N, V) logits over the vocabulary without a full-size fp32 copy: the logsumexp
without DK, the DK logit and the target logit, a chunk of rows at a time, with the DK prior
(method.md section 1) added in fp32 to the (N,) results; and the prior on whole logits.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

# fp32 bytes of logits upcast at a time in the vocabulary logsumexp: on a CPU a chunk that stays
# in cache; on a GPU one large enough (256 rows at V = 256k) that a micro-batch is a few dozen
# kernel launches, not thousands, while staying small next to the (N, V) logits themselves
LSE_CHUNK_BYTES = 16 * 2**20
LSE_CHUNK_BYTES_GPU = 256 * 2**20
NEG_INF = float("-inf")


def lse_chunk_rows(V: int, device: torch.device) -> int:
    """Rows of (N, V) logits upcast at a time by the vocabulary reduction on `device`."""
    budget = LSE_CHUNK_BYTES if torch.device(device).type == "cpu" else LSE_CHUNK_BYTES_GPU
    return max(1, budget // (4 * V))


class _VocabReduce(torch.autograd.Function):
    """(N, V) logits -> logsumexp without column dk, the dk logit and the target logit, each (N,).

    Upcast to >= fp32 one chunk of rows at a time; only the logits themselves and the (N,)
    results are kept for backward, and backward writes one gradient tensor, so a bf16
    (N, V) input never gets a full-size fp32 copy nor several full-size gradients.
    `prior` (c_other, c_dk), host floats: the DK prior's biases (dk_prior_bias), added here in
    fp32 to the (N,) results; the logits never carry them, so bf16 logits lose nothing to
    rounding log(psi V) (~0.03 nat at bf16's spacing) and no full-size biased copy exists.
    """

    @staticmethod
    def forward(ctx, x: Tensor, dk_id: int, target: Tensor, rows: int, prior=None):
        dtype = torch.promote_types(x.dtype, torch.float32)
        lse = torch.empty(x.shape[0], dtype=dtype, device=x.device)
        buf = torch.empty(min(rows, x.shape[0]), x.shape[1], dtype=dtype, device=x.device)
        for a in range(0, x.shape[0], rows):
            chunk = buf[: len(x[a : a + rows])].copy_(x[a : a + rows])  # the one chunk-sized buffer
            chunk[:, dk_id] = NEG_INF
            top = chunk.amax(1, keepdim=True)
            lse[a : a + rows] = top.squeeze(1) + chunk.sub_(top).exp_().sum(1).log()
        z_dk = x[:, dk_id].to(dtype)
        z_y = x.gather(1, target[:, None]).squeeze(1).to(dtype)
        ctx.save_for_backward(x, lse, target)  # lse of the logits as given: backward's softmax
        ctx.dk_id, ctx.rows = dk_id, rows
        if prior is not None:
            c_other, c_dk = prior
            lse, z_dk = lse + c_other, z_dk + c_dk
            z_y = z_y + torch.full_like(z_y, c_other).masked_fill_(target == dk_id, c_dk)
        return lse, z_dk, z_y

    @staticmethod
    def backward(ctx, g_lse: Tensor, g_dk: Tensor, g_y: Tensor):
        x, lse, target = ctx.saved_tensors
        grad = torch.empty_like(x)
        buf = torch.empty(min(ctx.rows, x.shape[0]), x.shape[1], dtype=lse.dtype, device=x.device)
        for a in range(0, x.shape[0], ctx.rows):
            b = slice(a, a + ctx.rows)
            # softmax without DK, one chunk at a time, plus the two gathered columns
            p = buf[: len(x[b])].copy_(x[b]).sub_(lse[b, None]).exp_().mul_(g_lse[b, None])
            p[:, ctx.dk_id] = g_dk[b]
            p.scatter_add_(1, target[b, None], g_y[b, None])
            grad[b] = p
        return grad, None, None, None, None


@torch.no_grad()
def position_quantities(
    logits: Tensor, targets: Tensor, dk_id: int, psi: float | None = None
) -> tuple[Tensor, Tensor]:
    """(log d, log t), each (B, L), of every position of logits (B, L, V) for targets (B, L):
    the don't-know probability and the target's probability with DK renormalised away, without
    a (B, L, V) copy (the vocabulary is reduced a chunk of rows at a time). For evaluation;
    targets < 0 are read as token 0. psi: as in step_quantities (the DK prior added in fp32)."""
    B, L, V = logits.shape
    rows = lse_chunk_rows(V, logits.device)
    prior = None if psi is None else dk_prior_bias(V, psi)
    lse_nodk, z_dk, z_y = (
        v.view(B, L)
        for v in _VocabReduce.apply(
            logits.reshape(-1, V), dk_id, targets.clamp_min(0).reshape(-1), rows, prior
        )
    )
    return z_dk - torch.logaddexp(lse_nodk, z_dk), z_y - lse_nodk


def dk_prior_bias(V: int, psi: float) -> tuple[float, float]:
    """(bias of every other column, bias of DK) of the DK prior, as host floats."""
    if not 0.0 < psi < 1.0:
        raise ValueError(f"psi must be in (0, 1), got {psi}")
    return math.log((1.0 - psi) * V / (V - 1)), math.log(psi * V)


@functools.lru_cache(maxsize=64)
def _prior_vector(V: int, dk_id: int, psi: float, dtype: torch.dtype, device: str) -> Tensor:
    c_other, c_dk = dk_prior_bias(V, psi)
    with torch.inference_mode(False):
        bias = torch.full((V,), c_other, dtype=dtype, device=device)
        bias[dk_id] = c_dk
    return bias


def apply_dk_prior(logits: Tensor, dk_id: int, psi: float = 0.9) -> Tensor:
    """Bias logits (..., V) so that DK starts with probability ~psi (method.md section 1).

    The bias is added in the logits' dtype: for bf16 logits that rounds it, so the trainer and
    the evaluators apply the prior in fp32 instead (step_quantities(psi=...), decoding.Context).
    """
    dk_prior_bias(logits.shape[-1], psi)  # checks psi
    dev = str(logits.device)
    return logits + _prior_vector(logits.shape[-1], dk_id, float(psi), logits.dtype, dev)
