"""The TopV algorithm: visual-aware transport cost, fixed-iteration Sinkhorn, importance, selection.

Pure PyTorch, batched, static shapes, float32 inside; the same code is exported into the pruning graph.
Names are resolved lazily so that ``topv.pruning.config`` can be used without importing torch.
"""

from __future__ import annotations

from topv._lazy import lazy_attributes

_LAZY = {
    "TopVConfig": "topv.pruning.config",
    "recovery_count": "topv.pruning.config",
    "sinkhorn": "topv.pruning.sinkhorn",
    "sinkhorn_potentials": "topv.pruning.sinkhorn",
    "logsumexp": "topv.pruning.sinkhorn",
    "centre_cost": "topv.pruning.cost",
    "feature_cost": "topv.pruning.cost",
    "spatial_cost": "topv.pruning.cost",
    "transport_cost": "topv.pruning.cost",
    "importance_from_cost": "topv.pruning.importance",
    "token_importance": "topv.pruning.importance",
    "check_keep": "topv.pruning.selection",
    "select_tokens": "topv.pruning.selection",
    "random_selection": "topv.pruning.baselines",
    "uniform_selection": "topv.pruning.baselines",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
