"""Shared fixtures: tiny random LLaVA models built from configs with fixed seeds (no downloads)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def scene_image():
    """A deterministic 80x70 RGB image with structure (a bright square on a gradient)."""
    from PIL import Image

    rng = np.random.RandomState(0)
    arr = (rng.rand(80, 70, 3) * 60).astype(np.uint8)
    arr[20:50, 25:55] = [220, 40, 40]
    return Image.fromarray(arr)


@pytest.fixture(scope="session")
def tiny_llava():
    """A tiny random LLaVA (CLIP tower 56 px / patch 14 -> 4x4 grid, 4-layer Llama) and its processor."""
    from topv.models.factory import LlavaShape, build_random_llava

    return build_random_llava(LlavaShape(initializer_range=0.2), seed=1)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory, tiny_llava):
    """The tiny model saved as a checkpoint folder with its processor."""
    model, processor = tiny_llava
    out = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
