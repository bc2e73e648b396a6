"""Every TopV hyperparameter in one typed, validated, read-only config.

The paper (Yang et al., CVPR 2025) publishes the number of Sinkhorn iterations (3) and the pruning layer
(L_i = 2); everything else is a reconstruction. How each default was chosen (validation splits only) is
in docs/accuracy.md, "Choosing the defaults".
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from topv.errors import ConfigError

ImportanceVariant = Literal["balanced_retention", "retention", "semi_relaxed", "balanced", "unbalanced"]
FeatureDistance = Literal["l2", "l2_rms", "cosine"]

IMPORTANCE_VARIANTS: tuple[str, ...] = ("balanced_retention", "retention", "semi_relaxed", "balanced", "unbalanced")
FEATURE_DISTANCES: tuple[str, ...] = ("l2", "l2_rms", "cosine")


@dataclass(frozen=True)
class TopVConfig:
    """Hyperparameters of the TopV solve and of the selection that follows it.

    Cost (each term min-max normalized to [0, 1] over the problem):
      C[i, j] = alpha * C_F[i, j] + beta * C_S[i, j] + gamma * C_E[i]

    Attributes:
        alpha: weight of the feature distance between source token i and target token j.
        beta: weight of the relative spatial distance 1 - exp(-d(p_i, p_j)^2 / (2 sigma^2)).
        gamma: weight of the absolute distance of source i from the image centre.
        sigma: width of the spatial Gaussian, as a fraction of the patch grid's longer side.
        epsilon: entropic regularization of the transport problem, in units of the normalized cost.
        iterations: Sinkhorn iterations (the paper's 3), unrolled into the exported graph.
        importance: how per-source importance is read from the transport plan
            (``topv.pruning.importance``): ``balanced_retention`` (default: the diagonal of the balanced
            plan after the iterations), ``retention``, ``semi_relaxed``, ``balanced`` or ``unbalanced``.
        rho: KL weight of the relaxed source marginal for ``unbalanced``.
        feature_distance: ``l2`` (raw source vs normalized target), ``l2_rms`` (source RMS-normalized
            first, so both sides are on the same scale) or ``cosine``.
        recovery_fraction: share of the keep budget given to uniform recovery: that many pruned tokens,
            evenly spaced in raster order, are put back.
    """

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 0.0
    sigma: float = 10.0 / 24.0
    epsilon: float = 0.05
    iterations: int = 3
    importance: ImportanceVariant = "balanced_retention"
    rho: float = 1.0
    feature_distance: FeatureDistance = "l2_rms"
    recovery_fraction: float = 0.25

    def __post_init__(self) -> None:
        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not number(value) or value < 0:
                raise ConfigError(f"TopVConfig.{name} must be a number >= 0; got {value!r}.")
        if self.alpha == 0 and self.beta == 0 and self.gamma == 0:
            raise ConfigError("TopVConfig: alpha, beta and gamma are all 0, so the cost is empty; set at least one > 0.")
        for name in ("sigma", "epsilon", "rho"):
            value = getattr(self, name)
            if not number(value) or not value > 0:
                raise ConfigError(f"TopVConfig.{name} must be a number > 0; got {value!r}.")
        if not isinstance(self.iterations, int) or isinstance(self.iterations, bool) or self.iterations < 1:
            raise ConfigError(f"TopVConfig.iterations must be an integer >= 1; got {self.iterations!r}.")
        if self.importance not in IMPORTANCE_VARIANTS:
            raise ConfigError(
                f"TopVConfig.importance must be one of {', '.join(IMPORTANCE_VARIANTS)}; got {self.importance!r}."
            )
        if self.feature_distance not in FEATURE_DISTANCES:
            raise ConfigError(
                f"TopVConfig.feature_distance must be one of {', '.join(FEATURE_DISTANCES)}; "
                f"got {self.feature_distance!r}."
            )
        if not number(self.recovery_fraction) or not 0 <= self.recovery_fraction < 1:
            raise ConfigError(
                f"TopVConfig.recovery_fraction must be in [0, 1); got {self.recovery_fraction!r}."
            )

    def replace(self, **changes: Any) -> "TopVConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TopVConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"A TopVConfig is a JSON object of its fields; got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown TopVConfig fields {unknown}; known fields are {sorted(known)}.")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def recovery_count(keep: int, recovery_fraction: float, num_tokens: int) -> int:
    """Number of uniformly recovered tokens inside a budget of ``keep`` out of ``num_tokens``.

    ``round(recovery_fraction * keep)``, but never the whole budget (at least one token comes from
    the ranking) and zero when nothing is pruned.
    """
    if keep >= num_tokens:
        return 0
    return max(0, min(keep - 1, int(round(recovery_fraction * keep))))
