"""Comparator selections with the same budget as TopV: random, uniform grid, and FastV's scores.

FastV's score itself needs the attention of the last prompt token at layer K; the reference pipeline
computes it (``topv.reference.pipeline``) and hands it to :func:`topv.select_tokens`, so FastV gets the
same top-k and recovery rules as TopV.
"""

from __future__ import annotations

import math

import torch

from topv.pruning.selection import check_keep, evenly_spaced_positions


def random_selection(num_tokens: int, keep: int, seed: int = 0) -> torch.Tensor:
    """``keep`` sorted indices drawn uniformly without replacement, reproducible from ``seed``."""
    check_keep(keep, num_tokens)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.sort(torch.randperm(num_tokens, generator=gen)[:keep]).values


def uniform_selection(grid_hw: tuple[int, int], keep: int) -> torch.Tensor:
    """``keep`` sorted indices spread evenly over the 2-D patch grid.

    Picks a ``gh x gw`` lattice with ``gh * gw >= keep`` and the grid's aspect ratio, centres its points
    in their cells, then drops evenly spaced lattice points until ``keep`` remain.
    """
    h, w = int(grid_hw[0]), int(grid_hw[1])
    n = h * w
    check_keep(keep, n)
    if keep == n:
        return torch.arange(n)
    gh = min(h, max(1, round(math.sqrt(keep * h / w))))
    gw = min(w, math.ceil(keep / gh))
    while gh * gw < keep:  # only when gw hit w: add rows
        gh += 1
    rows = evenly_spaced_positions(gh, h)
    cols = evenly_spaced_positions(gw, w)
    lattice = (rows.unsqueeze(1) * w + cols.unsqueeze(0)).reshape(-1)
    extra = lattice.numel() - keep
    if extra:
        drop = evenly_spaced_positions(extra, lattice.numel())
        mask = torch.ones(lattice.numel(), dtype=torch.bool)
        mask[drop] = False
        lattice = lattice[mask]
    return torch.sort(lattice).values
