"""Shared fixtures: tiny random LLaVA models built from configs with fixed seeds (no downloads)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# "verified" stamps of export folders go to a throw-away cache, not the user's ~/.cache
os.environ.setdefault("TOPV_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="topv-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's models on one thread (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    on a shared 2-core machine, 2 OpenMP threads made small models' decode steps 3-5x slower whenever
    another process held a core (measured: generate 7 s vs 1.5 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    from topv.testing.llava import LlavaShape, build_random_llava

    return build_random_llava(LlavaShape(initializer_range=0.2), seed=1)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory, tiny_llava):
    """The tiny model saved as a checkpoint folder with its processor."""
    model, processor = tiny_llava
    out = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


class ExportCache:
    """Exports tiny models once per test session (each export takes a few seconds)."""

    def __init__(self, root):
        self.root = root
        self.models = {}
        self.exports = {}

    def model_dir(self, name, shape, seed=3):
        if name not in self.models:
            from topv.testing.llava import save_random_llava
            from topv.testing.qwen import QwenShape, save_random_qwen

            save = save_random_qwen if isinstance(shape, QwenShape) else save_random_llava
            self.models[name] = save(self.root / "models" / name, shape, seed=seed)
        return self.models[name]

    def export(self, name, shape, **options):
        key = (name, tuple(sorted(options.items())))
        if key not in self.exports:
            from topv.export.exporter import ExportOptions, export_model

            out = self.root / "exports" / f"{name}-{len(self.exports)}"
            export_model(self.model_dir(name, shape), out, ExportOptions(**options))
            self.exports[key] = out
        return self.exports[key]


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    return ExportCache(tmp_path_factory.mktemp("topv"))
