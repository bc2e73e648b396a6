"""Per-source importance read from the transport plan (``TopVConfig.importance``).

Sources are the visual hidden states entering decoder layer K; targets are the same positions after
layer K's post-attention norm; ``C`` is their visual-aware cost (``topv.pruning.cost``). Variants:

* ``balanced_retention`` (default): ``iterations`` log-domain Sinkhorn iterations of the balanced
  problem (uniform marginals, POT's order), then the plan's diagonal, ``I_i = P_ii / a_i``: the share of
  token i's mass that stays on its own target. A token with many cheap substitutes (flat background)
  keeps little of it, a distinctive one most of it.
* ``retention``: the same diagonal of the plan with only the target marginal imposed (one softmax over
  sources per target; the iterations play no part).
* ``semi_relaxed``: row sums of that one-softmax plan.
* ``balanced``: row sums of the balanced plan after the iterations and one more target half-step.
* ``unbalanced``: row sums with the source marginal relaxed by a KL penalty of weight ``rho``.

Scores are float32, sum to 1 over the visual tokens, and larger means more important.
"""

from __future__ import annotations

import torch

from topv.pruning.config import TopVConfig
from topv.pruning.cost import transport_cost
from topv.pruning.sinkhorn import logsumexp, sinkhorn_potentials


def _diagonal(x: torch.Tensor) -> torch.Tensor:
    """``x[..., i, i]`` as a masked sum (exports as Mul/ReduceSum with a constant identity)."""
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return (x * eye).sum(-1)


def importance_from_cost(cost: torch.Tensor, config: TopVConfig) -> torch.Tensor:
    """``(..., N)`` importance of each source for a ``(..., N, N)`` float32 cost."""
    variant = config.importance
    if variant in ("retention", "semi_relaxed"):
        log_k = -cost / config.epsilon
        if variant == "retention":  # log P[i, i] / b_i = log_k[i, i] - LSE_k log_k[k, i]
            return torch.softmax(_diagonal(log_k) - logsumexp(log_k, dim=-2), dim=-1)
        return (torch.softmax(log_k, dim=-2) / cost.shape[-1]).sum(-1)
    if variant == "balanced_retention":
        log_k, f, g = sinkhorn_potentials(cost, None, None, config.epsilon, config.iterations)
        # log(P[i, i] / a_i) with a_i = 1/N; normalized over i (a constant shift of every score).
        return torch.softmax(_diagonal(log_k) + f + g, dim=-1)
    exponent = 1.0 if variant == "balanced" else config.rho / (config.rho + config.epsilon)
    log_k, f, g = sinkhorn_potentials(
        cost, None, None, config.epsilon, config.iterations, source_exponent=exponent, final_target_step=True
    )
    return torch.exp(f + logsumexp(log_k + g.unsqueeze(-2), dim=-1))


def token_importance(
    source: torch.Tensor,
    target: torch.Tensor,
    grid_hw: tuple[int, int],
    config: TopVConfig | None = None,
) -> torch.Tensor:
    """Importance of each visual token.

    Args:
        source: ``(B, N, d)`` or ``(N, d)`` hidden states entering the pruning layer (any float dtype).
        target: same shape, the same positions after the layer's post-attention norm.
        grid_hw: the patch grid ``(h, w)`` with ``h * w == N``, tokens in raster order.
        config: hyperparameters; :class:`TopVConfig` defaults when None.

    Returns:
        ``(B, N)`` (or ``(N,)``) float32 scores summing to 1 per row; keep the largest.
    """
    config = config or TopVConfig()
    source = torch.as_tensor(source)
    target = torch.as_tensor(target)
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} must have the same shape")
    cost = transport_cost(source, target, grid_hw, config)
    return importance_from_cost(cost, config)
