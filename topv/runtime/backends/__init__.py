"""The backends, one folder each, all implementing :class:`~topv.runtime.backends.base.Backend`.

Names map to classes lazily, so that a backend's library (onnxruntime, tensorrt, torch, openvino) is
imported only when that backend is opened.
"""

from __future__ import annotations

import importlib
from typing import Any

from topv.errors import InputError

BACKENDS: dict[str, str] = {
    "ort-cpu": "topv.runtime.backends.ort.backend:OrtBackend",
    "ort-cuda": "topv.runtime.backends.ort_cuda.backend:OrtCudaBackend",
    "trt": "topv.runtime.backends.trt.backend:TrtBackend",
    "torch": "topv.runtime.backends.torch.backend:TorchBackend",
    "openvino": "topv.runtime.backends.openvino.backend:OpenVinoBackend",
}


def backend_class(name: str) -> Any:
    if name not in BACKENDS:
        raise InputError(f"Unknown backend {name!r}; choose one of {', '.join(BACKENDS)}.")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)
