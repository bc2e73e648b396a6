"""Kept-token maps: the image the model saw, with pruned patches dimmed and kept patches outlined."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def model_view(pixel_values: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the image processor's normalization: (1, 3, H, W) floats -> (H, W, 3) uint8."""
    x = np.asarray(pixel_values, dtype=np.float32)[0].transpose(1, 2, 0)
    x = x * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    return (x.clip(0, 1) * 255).round().astype(np.uint8)


def kept_map_image(view: np.ndarray, kept_grid: Sequence[int], grid_hw: tuple[int, int], *, scale: int = 1) -> Any:
    """A PIL image: pruned patches darkened, kept patches outlined. ``kept_grid`` indexes the patch grid."""
    from PIL import Image, ImageDraw

    h, w = grid_hw
    H, W = view.shape[:2]
    ph, pw = H // h, W // w
    kept = np.zeros(h * w, dtype=bool)
    kept[np.asarray(list(kept_grid), dtype=np.int64)] = True
    shaded = view.astype(np.float32)
    for idx in np.flatnonzero(~kept):
        r, c = divmod(int(idx), w)
        shaded[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] *= 0.25
    img = Image.fromarray(shaded.astype(np.uint8))
    if scale > 1:
        img = img.resize((W * scale, H * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for idx in np.flatnonzero(kept):
        r, c = divmod(int(idx), w)
        draw.rectangle([c * pw * scale, r * ph * scale, (c + 1) * pw * scale - 1, (r + 1) * ph * scale - 1],
                       outline=(255, 220, 0))
    return img


def save_kept_map(path: str | Path, pixel_values: np.ndarray, kept_indices: Sequence[int] | None, *,
                  grid_hw: tuple[int, int], extra: int, mean: Sequence[float], std: Sequence[float]) -> Path:
    """Write the kept-token map of one generation as PNG. ``kept_indices`` are visual-token positions."""
    view = model_view(pixel_values, mean, std)
    n = grid_hw[0] * grid_hw[1]
    grid = range(n) if kept_indices is None else [i - extra for i in kept_indices if i >= extra]
    scale = max(1, 384 // max(view.shape[:2]))
    img = kept_map_image(view, grid, grid_hw, scale=scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
