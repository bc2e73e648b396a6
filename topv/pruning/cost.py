"""TopV's visual-aware transport cost: feature distance, relative spatial distance, centre distance.

All terms are computed in float32 and min-max normalized to [0, 1] so that the weights alpha, beta and
gamma are comparable and epsilon is in units of the normalized cost. Shapes are static: the grid terms
depend only on ``(h, w)`` and become constants in an exported graph.
"""

from __future__ import annotations

import torch

from topv.pruning.config import TopVConfig

_TINY = 1e-12


def minmax(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Scale ``x`` to [0, 1] over ``dims`` (a constant input maps to 0)."""
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(_TINY)


def grid_coordinates(grid_hw: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """``(h*w, 2)`` float32 (row, col) coordinates of the patches in raster order."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    rows = torch.arange(h, dtype=torch.float32, device=device).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float32, device=device).repeat(h)
    return torch.stack([rows, cols], dim=-1)


def spatial_cost(grid_hw: tuple[int, int], sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """``(N, N)`` relative spatial cost 1 - exp(-d^2 / (2 sigma^2)), min-max normalized.

    ``sigma`` is a fraction of the grid's longer side.
    """
    p = grid_coordinates(grid_hw, device)
    d2 = (p.unsqueeze(1) - p.unsqueeze(0)).pow(2).sum(-1)
    s = sigma * max(int(grid_hw[0]), int(grid_hw[1]))
    return minmax(1.0 - torch.exp(-d2 / (2.0 * s * s)), (-2, -1))


def centre_cost(grid_hw: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """``(N,)`` Euclidean distance of each patch from the image centre, min-max normalized."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    p = grid_coordinates(grid_hw, device)
    centre = torch.tensor([(h - 1) / 2.0, (w - 1) / 2.0], dtype=torch.float32, device=device)
    return minmax((p - centre).pow(2).sum(-1).sqrt(), (-1,))


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def feature_cost(source: torch.Tensor, target: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """``(..., N, N)`` distance between source token i and target token j, min-max normalized.

    Computed in float32 as a GEMM: ||s||^2 + ||t||^2 - 2 s.t (clamped at 0, then square-rooted).
    """
    s = source.float()
    t = target.float()
    if distance == "cosine":
        s = s / s.norm(dim=-1, keepdim=True).clamp_min(_TINY)
        t = t / t.norm(dim=-1, keepdim=True).clamp_min(_TINY)
        d = 1.0 - s @ t.transpose(-1, -2)
    else:
        if distance == "l2_rms":
            s = _rms(s)
            t = _rms(t)
        sq = s.pow(2).sum(-1).unsqueeze(-1) + t.pow(2).sum(-1).unsqueeze(-2) - 2.0 * (s @ t.transpose(-1, -2))
        d = sq.clamp_min(0.0).sqrt()
    return minmax(d, (-2, -1))


def transport_cost(
    source: torch.Tensor, target: torch.Tensor, grid_hw: tuple[int, int], config: TopVConfig
) -> torch.Tensor:
    """``(..., N, N)`` float32 cost alpha*C_F + beta*C_S + gamma*C_E[i]."""
    n = source.shape[-2]
    h, w = int(grid_hw[0]), int(grid_hw[1])
    if h * w != n:
        raise ValueError(f"grid {h}x{w} has {h * w} patches but there are {n} visual tokens")
    cost = config.alpha * feature_cost(source, target, config.feature_distance)
    if config.beta:
        cost = cost + config.beta * spatial_cost(grid_hw, config.sigma, source.device)
    if config.gamma:
        cost = cost + config.gamma * centre_cost(grid_hw, source.device).unsqueeze(-1)
    return cost
