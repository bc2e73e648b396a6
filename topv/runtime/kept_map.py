"""Kept-token maps: the image as the vision tower saw it, pruned patches dimmed and kept patches outlined."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def kept_map_image(view: np.ndarray, kept_grid: Sequence[int], grid_hw: tuple[int, int], *, scale: int = 1) -> Any:
    """A PIL image: pruned patches darkened, kept patches outlined. ``kept_grid`` indexes the token grid."""
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
        draw.rectangle([c * pw * scale, r * ph * scale, (c + 1) * pw * scale - 1, (r + 1) * ph * scale - 1], outline=(255, 220, 0))
    return img


def save_kept_map(path: str | Path, view: np.ndarray, kept_indices: Sequence[int] | None, *, grid_hw: tuple[int, int],
                  extra: int) -> Path:
    """Write the kept-token map of one generation as a PNG (marked as topv's); ``kept_indices`` are visual positions."""
    from PIL.PngImagePlugin import PngInfo

    from topv.cli.outputs import PNG_MARK, atomic_write

    n = grid_hw[0] * grid_hw[1]
    grid = range(n) if kept_indices is None else [i - extra for i in kept_indices if i >= extra]
    img = kept_map_image(view, grid, grid_hw, scale=max(1, 384 // max(view.shape[:2])))
    info = PngInfo()
    info.add_text(*PNG_MARK)
    return atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG", pnginfo=info))


def save_map(pipe: Any, image: Any, kept_indices: Sequence[int] | None, path: str | Path) -> Path:
    """The kept-token map of a ``Pipeline`` generation on ``image``."""
    spec = pipe.manifest.spec
    return save_kept_map(path, pipe.processor.model_view(image), kept_indices, grid_hw=spec.grid_hw,
                         extra=spec.num_extra_visual_tokens)
