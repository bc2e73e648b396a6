"""Every TopV hyperparameter in one typed, validated, read-only config.

The paper (Yang et al., CVPR 2025) publishes only the number of Sinkhorn iterations (3) and the
pruning layer (L_i = 2, "following FastV"). Everything else is a reconstruction; each field says
where its default comes from. The fields marked "sweep" were chosen by a validation sweep on the
bundled synthetic VQA task (``evaluation/sweep_topv.py`` on ``data/shapes-vqa/val.jsonl``; the table,
its margins and its limits are in ``docs/accuracy.md``).
"""

from __future__ import annotations

import dataclasses
import json
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
            Default 1.0 (the unofficial re-implementation X1; the paper reports low sensitivity).
        beta: weight of the relative spatial distance 1 - exp(-d(p_i, p_j)^2 / (2 sigma^2)).
            Default 1.0 (X1).
        gamma: weight of the absolute distance of source i from the image centre.
            Default 0.0 (sweep: with ``retention``, 0 was above 2 for every feature distance on the
            bundled model's val split, by 1.9-11.7 points. X1's 0.01 makes the term negligible).
        sigma: width of the spatial Gaussian, as a fraction of the patch grid's longer side.
            Default 10/24 (X1 uses 10 cells on LLaVA-1.5's 24x24 grid).
        epsilon: entropic regularization of the transport problem, in units of the normalized cost.
            Default 0.05 (sweep over 0.05, 0.1, 0.3 with semi_relaxed: 0.3 worst; with retention 0.02,
            0.05 and 0.1 were within 2 of 900 val answers; X1 uses 0.1).
        iterations: Sinkhorn iterations. Default 3 (paper, Sec. 3.6: "converges in 3 iterations").
        importance: how per-source importance is read from the transport plan. ``semi_relaxed``
            keeps only the target marginal, I_i = sum_j b_j softmax_i(-C_ij / eps) (row sums);
            ``retention`` (default) reads the same plan's diagonal, I_i = softmax_i(-C_ij / eps) at
            j = i: the share of token i's own mass that no other token can carry more cheaply, so a
            token with many near-duplicates (flat background) scores low and a distinctive one high.
            ``balanced`` runs ``iterations`` POT-order Sinkhorn iterations and a final target
            half-step, then takes row sums (the spec's "TopV-R"); a source-only term (gamma) acts only
            through the first target half-step, and the scores tend to uniform as the solve converges.
            ``unbalanced`` relaxes the source marginal with a KL penalty of weight ``rho``.
            Default chosen on validation splits only: the bundled model's sweep put ``semi_relaxed``
            (l2, gamma 0.5) first by 5 of 900 answers over ``retention`` (l2_rms, gamma 0), but
            at gamma 0 ``semi_relaxed`` ranged over 19 points across the three feature distances
            (0.744-0.934) and ``retention`` over 0.3 (0.930-0.933); on the realistic model's val split
            ``retention`` kept 96% of the unpruned accuracy and the sweep winner 85% (docs/accuracy.md).
        rho: KL weight of the relaxed source marginal for ``unbalanced``. Default 1.0 (our choice:
            the same scale as the normalized cost).
        feature_distance: ``l2`` (Euclidean between raw source and normalized target; spec A4),
            ``l2_rms`` (source RMS-normalized first, so both sides are on the same scale) or
            ``cosine``. Default ``l2_rms`` (with ``retention``: within 3 of 900 val answers of the
            others on the bundled model, 5.5 points above ``l2`` on the realistic model's val split).
        recovery_fraction: share of the keep budget given to uniform recovery: that many pruned
            tokens, evenly spaced in raster order, are put back. Default 0.25 (the paper's
            "every 4th or 6th token" at its ~50% operating point is 17-25%; sweep: 0 was worst, 0.25 best
            of 0, 0.125, 0.25, 0.5).
    """

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 0.0
    sigma: float = 10.0 / 24.0
    epsilon: float = 0.05
    iterations: int = 3
    importance: ImportanceVariant = "retention"
    rho: float = 1.0
    feature_distance: FeatureDistance = "l2_rms"
    recovery_fraction: float = 0.25

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"TopVConfig.{name} must be a number >= 0; got {value!r}.")
        if self.alpha == 0 and self.beta == 0 and self.gamma == 0:
            raise ConfigError("TopVConfig: alpha, beta and gamma are all 0, so the cost is empty; set at least one > 0.")
        for name in ("sigma", "epsilon", "rho"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
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
        if not isinstance(self.recovery_fraction, (int, float)) or not 0 <= self.recovery_fraction < 1:
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
