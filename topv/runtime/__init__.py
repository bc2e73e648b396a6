"""The runtime: ``Pipeline.load(OUT_DIR, backend=...)`` then ``generate(image, prompt, ...)``.

Backends (``topv.runtime.backends``): ``ort-cpu`` (ONNX Runtime CPU), ``ort-cuda`` (ONNX Runtime CUDA,
device-resident KV), ``trt`` (TensorRT engines built by topv-build), ``torch`` (the graphs in PyTorch).
"""

from __future__ import annotations

from topv._lazy import lazy_attributes

_LAZY = {"Pipeline": "topv.runtime.pipeline", "RunResult": "topv.runtime.pipeline", "TextStream": "topv.runtime.pipeline"}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
