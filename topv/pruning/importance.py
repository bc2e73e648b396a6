"""Per-source importance read from the transport plan, without the balanced-OT degeneracy.

Sources are the visual hidden states entering decoder layer K; targets are the same positions after
layer K's post-attention norm. A source's importance is the transport mass it sends to the targets
(the row sum of the "contribution matrix"). Three ways to make that informative are implemented,
selected by ``TopVConfig.importance`` (see ``docs/DESIGN.md``, "Importance"):

* ``semi_relaxed`` (default): only the target marginal is imposed,
  ``P[i, j] = b_j softmax_i(-C[i, j] / eps)``; ``I_i = sum_j P[i, j]``.
* ``balanced``: ``iterations`` POT-order Sinkhorn iterations plus a final target half-step;
  ``I_i = sum_j P[i, j]``. A source-only cost term acts only through the first half-step; scores flatten as it converges.
* ``unbalanced``: the source marginal is relaxed with a KL penalty of weight ``rho``
  (``f <- rho/(rho+eps) * (log a - LSE(...))``), ending on the exact target half-step.
* ``retention``: the same semi-relaxed plan, read on its diagonal: ``I_i = P[i, i] / b_i =
  softmax_i(-C[i, i] / eps)``, the share of target i's mass that only source i can carry. A token
  with many cheap substitutes (a patch of flat background among hundreds like it) keeps little of its
  own mass; a distinctive one keeps most of it. Row sums cannot see this: mass a redundant source
  loses to its duplicates it receives back from them, so every row sums to about the same.

Scores are float32, sum to 1 over the visual tokens, and larger means more important.
"""

from __future__ import annotations

import torch

from topv.pruning.config import TopVConfig
from topv.pruning.cost import transport_cost
from topv.pruning.sinkhorn import sinkhorn_potentials


def importance_from_cost(cost: torch.Tensor, config: TopVConfig) -> torch.Tensor:
    """``(..., N)`` importance of each source for a ``(..., N, M)`` float32 cost."""
    if config.importance == "retention":
        log_k = -cost / config.epsilon
        n = cost.shape[-1]
        eye = torch.eye(n, dtype=cost.dtype, device=cost.device)
        # log P[i, i] / b_i = log_k[i, i] - LSE_k log_k[k, i]; the diagonal as a masked sum (exports
        # as plain Mul/ReduceSum with a constant identity).
        own = (log_k * eye).sum(-1) - torch.logsumexp(log_k, dim=-2)
        return torch.softmax(own, dim=-1)
    if config.importance == "semi_relaxed":
        log_k = -cost / config.epsilon
        m = cost.shape[-1]
        plan = torch.softmax(log_k, dim=-2) / m
        return plan.sum(-1)
    exponent = 1.0 if config.importance == "balanced" else config.rho / (config.rho + config.epsilon)
    log_k, f, g = sinkhorn_potentials(
        cost, None, None, config.epsilon, config.iterations, source_exponent=exponent, final_target_step=True
    )
    return torch.exp(f + torch.logsumexp(log_k + g.unsqueeze(-2), dim=-1))


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
