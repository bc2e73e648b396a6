"""Log-domain Sinkhorn with a fixed number of iterations (static shapes, exportable to ONNX).

The iteration order is POT's (``ot.bregman.sinkhorn_log``): starting from zero potentials, each
iteration updates the column (target) potential and then the row (source) potential, so after any
number of iterations the plan's row sums equal ``a`` exactly. :func:`sinkhorn` reproduces POT to
float64 round-off for the same number of iterations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``log(sum(exp(x), dim))`` in the stable max / exp / sum / log form.

    Written out rather than ``torch.logsumexp`` so that the exported graph holds ReduceMax, Exp,
    ReduceSum and Log over one axis: ONNX's ``ReduceLogSumExp`` is mistranslated by some runtimes
    (OpenVINO 2026.4 reduces over every axis), and these four ops are portable everywhere.
    """
    m = x.amax(dim=dim, keepdim=True)
    return (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)


def _as_tensor(x: Any, like: torch.Tensor | None = None) -> torch.Tensor | None:
    """Accept torch tensors, numpy arrays and lists (POT's empty-list convention means "uniform")."""
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x, dtype=np.float64) if like is None else np.asarray(x))
    if x.numel() == 0:
        return None
    return x


def _log_marginal(m: torch.Tensor | None, batch: tuple[int, ...], size: int, like: torch.Tensor) -> torch.Tensor:
    if m is None:
        return torch.full((*batch, size), -torch.log(torch.tensor(float(size), dtype=like.dtype)).item(),
                          dtype=like.dtype, device=like.device)
    m = m.to(device=like.device, dtype=like.dtype)
    return torch.log(m).expand(*batch, size)


def sinkhorn_potentials(
    cost: torch.Tensor,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    eps: float,
    iters: int,
    *,
    source_exponent: float = 1.0,
    final_target_step: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the log-domain iterations and return ``(log_kernel, f, g)``.

    ``log_kernel = -cost / eps``; the plan is ``exp(log_kernel + f[..., :, None] + g[..., None, :])``.
    ``source_exponent`` < 1 relaxes the source marginal (unbalanced OT with a KL penalty:
    rho / (rho + eps)); ``final_target_step`` adds one more column update after the last iteration.
    """
    if cost.dim() < 2:
        raise ValueError(f"cost must have at least 2 dimensions (..., n, m); got shape {tuple(cost.shape)}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1; got {iters}")
    batch = tuple(cost.shape[:-2])
    n, m = cost.shape[-2], cost.shape[-1]
    log_k = -cost / eps
    log_a = _log_marginal(a, batch, n, cost)
    log_b = _log_marginal(b, batch, m, cost)
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    for _ in range(iters):
        g = log_b - logsumexp(log_k + f.unsqueeze(-1), dim=-2)
        f = source_exponent * (log_a - logsumexp(log_k + g.unsqueeze(-2), dim=-1))
    if final_target_step:
        g = log_b - logsumexp(log_k + f.unsqueeze(-1), dim=-2)
    return log_k, f, g


def sinkhorn(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    eps: float = 0.1,
    iters: int = 3,
) -> torch.Tensor:
    """Entropic optimal-transport plan after exactly ``iters`` log-domain Sinkhorn iterations.

    Args:
        cost: ``(..., n, m)`` cost matrix (any leading batch dimensions).
        a: source marginal ``(n,)`` or ``(..., n)``; uniform ``1/n`` when None.
        b: target marginal ``(m,)`` or ``(..., m)``; uniform ``1/m`` when None.
        eps: entropic regularization (POT's ``reg``).
        iters: number of iterations (POT's ``numItermax`` with ``stopThr=0``).

    Returns:
        The plan ``(..., n, m)`` in the dtype of ``cost``; equal to
        ``ot.bregman.sinkhorn_log(a, b, cost, eps, numItermax=iters, stopThr=0)``. NumPy inputs give a
        NumPy result (computed in their dtype); empty ``a``/``b`` mean uniform, as in POT.
    """
    numpy_in = not isinstance(cost, torch.Tensor)
    cost_t = _as_tensor(cost)
    log_k, f, g = sinkhorn_potentials(cost_t, _as_tensor(a, cost_t), _as_tensor(b, cost_t), eps, iters)
    plan = torch.exp(log_k + f.unsqueeze(-1) + g.unsqueeze(-2))
    return plan.numpy() if numpy_in else plan
