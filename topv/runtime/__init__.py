"""The runtime: ``Pipeline.load(OUT_DIR, backend=...)`` then ``generate(image, prompt, ...)``.

Backends: ``ort-cpu`` (ONNX Runtime CPU), ``ort-cuda`` (ONNX Runtime CUDA, device-resident KV),
``trt`` (TensorRT engines built by topv-build), ``torch`` (the PyTorch reference).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Pipeline": "topv.runtime.pipeline", "RunResult": "topv.runtime.pipeline", "TextStream": "topv.runtime.pipeline"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'topv.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
