"""Per-source importance read from the transport plan (``TopVConfig.importance``).

Sources are the visual hidden states entering decoder layer K; targets are the same positions after
layer K's post-attention norm; ``C`` is their visual-aware cost (``topv.pruning.cost``). Variants:

* ``balanced_retention`` (default): ``iterations`` log-domain Sinkhorn iterations of the balanced
  problem (uniform marginals, POT's order), then the plan's diagonal, ``P_ii / a_i``: the share of token
  i's mass that stays on its own target. A token with many cheap substitutes (flat background) keeps
  little of it, a distinctive one most of it.
* ``retention``: the same diagonal of the plan with only the target marginal imposed (one softmax over
  sources per target; the iterations play no part).
* ``semi_relaxed``: row sums of that one-softmax plan.
* ``balanced``: row sums of the balanced plan after the iterations and one more target half-step.
* ``unbalanced``: row sums with the source marginal relaxed by a KL penalty of weight ``rho``.

Two views of the same quantity (:func:`importance_logits`, :func:`importance_from_cost`):

* the **ranking key**, in log space, which the selection ranks (reference, exported graph, every backend).
  For the retention variants it is the log-odds of the retained share ``r_i = P_ii / a_i``:
  ``log P_ii - log(sum_{j != i} P_ij)``, the diagonal entry against a log-sum-exp over the off-diagonal ones
  (the source potential cancels). It ranks exactly as ``r_i`` in exact arithmetic, and in float32 it stays
  well conditioned at both ends: where ``r_i = 1 - tiny`` (a token that keeps nearly all its mass, common with
  random weights) float32 cannot hold ``tiny`` (the kept set was then decided by rounding), but it holds
  ``log tiny``; where ``r_i`` is tiny, ``log r_i`` is computed directly. The other variants' key is the log of
  their row mass.
* the **scores** users see (``softmax`` of the key over the visual tokens): float32, sum to 1, larger means
  more important.
"""

from __future__ import annotations

import math

import torch

from topv.pruning.config import TopVConfig
from topv.pruning.cost import transport_cost
from topv.pruning.sinkhorn import logsumexp, sinkhorn_potentials


def _diagonal(x: torch.Tensor) -> torch.Tensor:
    """``x[..., i, i]`` as a masked sum (exports as Mul/ReduceSum with a constant identity)."""
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return (x * eye).sum(-1)


def off_diagonal_logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``LSE`` of a square ``(..., N, N)`` tensor along ``dim`` (-1: over j for each row i; -2: over i for each
    column j) with the diagonal left out.

    The diagonal is replaced by the line's own minimum before the max (so the max is an off-diagonal entry and
    no infinite or fp16-unsafe constant enters the graph) and multiplied by zero in the sum. Exports as
    ReduceMin / Where / ReduceMax / Sub / Exp / Mul / ReduceSum / Log: plain ops on every runtime. The sum holds
    ``exp(0) = 1`` for the largest entry, so its log is finite for ``N >= 2``.
    """
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    masked = torch.where(eye > 0, x.amin(dim=dim, keepdim=True), x)
    m = masked.amax(dim=dim, keepdim=True)
    total = (torch.exp(masked - m) * (1 - eye)).sum(dim=dim, keepdim=True)
    return (m + torch.log(total)).squeeze(dim)


def importance_logits(cost: torch.Tensor, config: TopVConfig) -> torch.Tensor:
    """``(..., N)`` ranking key of each source for a ``(..., N, N)`` float32 cost (log space, larger = keep).

    ``softmax`` of it over the last axis is :func:`importance_from_cost`. A single token (``N == 1``) gets 0.
    """
    variant = config.importance
    n = cost.shape[-1]
    if n == 1:
        return torch.zeros(cost.shape[:-1], dtype=cost.dtype, device=cost.device)
    if variant in ("retention", "semi_relaxed"):
        log_k = -cost / config.epsilon
        if variant == "retention":  # log-odds of P[i, i] / b_i, column i: P[k, i] = b_i softmax_k(log_k[k, i])
            return _diagonal(log_k) - off_diagonal_logsumexp(log_k, dim=-2)
        # log of the row sums of P = b_j softmax_i(log_k[i, j]), b_j = 1/N
        return logsumexp(log_k - logsumexp(log_k, dim=-2).unsqueeze(-2), dim=-1) - math.log(n)
    if variant == "balanced_retention":
        log_k, _, g = sinkhorn_potentials(cost, None, None, config.epsilon, config.iterations)
        # log P[i, i] - log sum_{j != i} P[i, j] with P = exp(log_k + f_i + g_j): f_i cancels
        x = log_k + g.unsqueeze(-2)
        return _diagonal(x) - off_diagonal_logsumexp(x, dim=-1)
    exponent = 1.0 if variant == "balanced" else config.rho / (config.rho + config.epsilon)
    log_k, f, g = sinkhorn_potentials(
        cost, None, None, config.epsilon, config.iterations, source_exponent=exponent, final_target_step=True
    )
    return f + logsumexp(log_k + g.unsqueeze(-2), dim=-1)


def importance_from_cost(cost: torch.Tensor, config: TopVConfig) -> torch.Tensor:
    """``(..., N)`` importance scores (``softmax`` of :func:`importance_logits`; sum to 1)."""
    return torch.softmax(importance_logits(cost, config), dim=-1)


def token_importance(
    source: torch.Tensor,
    target: torch.Tensor,
    grid_hw: tuple[int, int],
    config: TopVConfig | None = None,
    *,
    log: bool = False,
) -> torch.Tensor:
    """Importance of each visual token.

    Args:
        source: ``(B, N, d)`` or ``(N, d)`` hidden states entering the pruning layer (any float dtype).
        target: same shape, the same positions after the layer's post-attention norm.
        grid_hw: the patch grid ``(h, w)`` with ``h * w == N``, tokens in raster order.
        config: hyperparameters; :class:`TopVConfig` defaults when None.
        log: return the ranking key (:func:`importance_logits`) instead of the normalized scores; the
            selection ranks it (its float32 order is the exact order; the scores' may tie where they saturate).

    Returns:
        ``(B, N)`` (or ``(N,)``) float32 scores summing to 1 per row (or their log-space key); keep the largest.
    """
    config = config or TopVConfig()
    source = torch.as_tensor(source)
    target = torch.as_tensor(target)
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} must have the same shape")
    cost = transport_cost(source, target, grid_hw, config)
    key = importance_logits(cost, config)
    return key if log else torch.softmax(key, dim=-1)
