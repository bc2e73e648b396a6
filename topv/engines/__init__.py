"""TensorRT engines for an export folder: static check, engine build, engine manifest.

Light to import: tensorrt, torch and onnx are imported inside the functions that need them, so
``import topv.engines`` and ``topv-build --help`` / ``topv-check --help`` work without them. The ``trt``
backend that runs the engines is ``topv.runtime.backends.trt``.

Modules:
    check            ``check_folder``: the op types topv emits and the rules TensorRT's parser needs
    profiles         optimization profiles derived from the manifest's symbolic axes
    engine_manifest  ``engines.json``: read/write, version/GPU refusal, engine file checks
    build            ``build_engines``: one engine per graph with the tensorrt Python API
    device           GPU identity (name, compute capability)
    trt_import       ``import tensorrt`` with install instructions; the TensorRT logger
    build_cli / check_cli   ``topv-build`` / ``topv-check``
"""

from __future__ import annotations

from topv.engines.engine_manifest import ENGINE_MANIFEST_NAME, EngineManifest, GpuInfo, check_compatible
from topv.engines.errors import EngineBuildError, EngineRunError
from topv.engines.profiles import GraphProfile, ShapeRange, derive_profiles

__all__ = [
    "ENGINE_MANIFEST_NAME",
    "EngineBuildError",
    "EngineManifest",
    "EngineRunError",
    "GpuInfo",
    "GraphProfile",
    "ShapeRange",
    "check_compatible",
    "derive_profiles",
]
