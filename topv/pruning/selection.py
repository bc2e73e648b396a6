"""Which visual tokens to keep: top-k by score plus uniform recovery of pruned tokens.

Everything is static-shape tensor code (``TopK``, comparisons and gathers), the same function eagerly and
inside the pruning graph. **Ties**: equal scores rank by position, the lower index first. The rule does not
rest on any runtime's ``TopK`` tie order (ONNX specifies lower index first; TensorRT documents none): ``TopK``
only finds the k-th largest *value*, then every token gets a distinct integer key (above / at / below that
value, then its position) and a second ``TopK`` picks the keys, which cannot tie.
"""

from __future__ import annotations

import torch

from topv.errors import KeepOutOfRangeError
from topv.pruning.config import TopVConfig, recovery_count


def check_keep(keep: int, num_tokens: int) -> int:
    """Validate a keep budget against the number of visual tokens and return it as an int."""
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise KeepOutOfRangeError(f"keep must be an integer number of visual tokens; got {keep!r}.")
    if not 1 <= keep <= num_tokens:
        raise KeepOutOfRangeError(
            f"keep must be between 1 and the number of visual tokens ({num_tokens}); got {keep}. "
            f"Choose a budget such as {max(1, num_tokens // 3)} (1/3) or {max(1, num_tokens // 9)} (1/9)."
        )
    return keep


def evenly_spaced_positions(count: int, length: int) -> torch.Tensor:
    """``count`` distinct positions in ``range(length)``, evenly spread: floor((i + 1/2) * length / count).

    Integer arithmetic, so an exported graph holds an int64 constant (no float64).
    """
    if count == 0:
        return torch.zeros(0, dtype=torch.long)
    return ((2 * torch.arange(count, dtype=torch.long) + 1) * length) // (2 * count)


def top_k_by_score(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores per row (in rank order), ties broken by the lower index.

    Tokens whose scores differ are never reordered. Exact ties are resolved without relying on ``TopK``'s
    tie order: with ``t`` the k-th largest value (a value, the same whichever tied token ``TopK`` returned),
    token i's key is ``2N`` (above ``t``) or ``N`` (at ``t``) or 0 (below), plus ``N - 1 - i``: distinct
    integers below ``3N``, exact in float32 for any grid up to 5.5M tokens, so the second ``TopK`` has no ties.
    """
    n = scores.shape[-1]
    if k >= n:
        return torch.arange(n, device=scores.device).expand(*scores.shape[:-1], n)
    threshold = torch.topk(scores, k, dim=-1, largest=True, sorted=True).values[..., k - 1:k]
    band = (scores > threshold).to(torch.float32) * (2 * n) + (scores == threshold).to(torch.float32) * n
    position = torch.arange(n - 1, -1, -1, dtype=torch.float32, device=scores.device)
    return torch.topk(band + position, k, dim=-1, largest=True, sorted=True).indices


#: How far float32 runtimes may move TopV's ranking key (log-odds, nats) for the same request. Measured at most 3.9e-5
#: on 40 random-model requests (tests/export/test_kept_agreement.py, which asserts this bound) and 8.4e-5 on 40 test
#: questions of the bundled model, across ONNX Runtime's optimization levels and thread counts, OpenVINO, torch and
#: the reference (AMD EPYC); the bound leaves 6x for other CPUs' kernels.
KEY_FLOAT32_NOISE = 5e-4
#: A boundary margin below this is a near-tie: rounding on some runtime could swap the tokens either side of it.
KEY_NEAR_TIE = 4 * KEY_FLOAT32_NOISE


def boundary_margin(key: torch.Tensor, keep: int, config: TopVConfig | None = None) -> float:
    """How far apart the last token kept by rank and the first one left out are, in the units of ``key``
    (``(N,)``, the ranking key). A kept set is decided by the scores, not by rounding, when this is far above the
    key's float32 noise; ``inf`` when nothing is left out by rank (``keep`` covers every token)."""
    config = config or TopVConfig()
    key = torch.as_tensor(key).double().reshape(-1)
    n = key.numel()
    k_top = keep - recovery_count(keep, config.recovery_fraction, n)
    if k_top >= n:
        return float("inf")
    ranked = torch.sort(key, descending=True).values
    return float(ranked[k_top - 1] - ranked[k_top])


def select_tokens(scores: torch.Tensor, keep: int, config: TopVConfig | None = None) -> torch.Tensor:
    """Indices of the visual tokens to keep.

    The budget is split into ``keep - R`` tokens with the highest scores and ``R =
    recovery_count(keep, config.recovery_fraction, N)`` tokens recovered uniformly: the pruned tokens
    in raster order, ``R`` of them taken at evenly spaced positions.

    Args:
        scores: ``(B, N)`` or ``(N,)`` importance (larger = keep); TopV ranks its log-space key
            (``token_importance(..., log=True)``), any monotone transform gives the same set. Ranked in float64
            when given float64, else in float32.
        keep: number of tokens to keep, ``1 <= keep <= N``.
        config: supplies ``recovery_fraction``; defaults when None.

    Returns:
        ``(B, keep)`` (or ``(keep,)``) int64 indices, sorted ascending, unique; deterministic.
    """
    config = config or TopVConfig()
    scores = torch.as_tensor(scores)
    squeeze = scores.dim() == 1
    if squeeze:
        scores = scores.unsqueeze(0)
    n = scores.shape[-1]
    check_keep(keep, n)
    recovered = recovery_count(keep, config.recovery_fraction, n)
    k_top = keep - recovered
    top = top_k_by_score(scores if scores.dtype == torch.float64 else scores.float(), k_top)  # float64 stays exact
    if recovered:
        positions = torch.arange(n, device=scores.device).expand(scores.shape[0], n)
        is_top = torch.zeros_like(positions).scatter(-1, top, 1)
        # Pruned tokens first, each group in raster order (the keys are distinct integers).
        pruned = torch.topk(is_top * n + positions, n - k_top, dim=-1, largest=False, sorted=True).indices
        picks = evenly_spaced_positions(recovered, n - k_top).to(scores.device)
        top = torch.cat([top, pruned[:, picks]], dim=-1)
    kept = torch.topk(top, keep, dim=-1, largest=False, sorted=True).values  # distinct values: ascending
    return kept.squeeze(0) if squeeze else kept
