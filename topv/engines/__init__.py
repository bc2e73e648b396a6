"""TensorRT engines for an export folder: static compatibility check, engine build, engine manifest, runtime.

Light to import: tensorrt, torch and onnx are imported inside the functions that need them, so
``import topv.engines`` and ``topv-build --help`` / ``topv-check --help`` work without them.

Modules:
    trt_ops          the TensorRT 10.x ONNX parser's operator support matrix, as data
    check            ``check_folder``: static report (operators, dtypes, dynamic axes, opset, external data)
    check_report     the report's findings, text table and JSON
    profiles         optimization profiles derived from the manifest's symbolic axes
    engine_manifest  ``engines.json``: read/write, version/GPU refusal, engine file checks
    build            ``build_engines``: one engine per graph with the tensorrt Python API
    runtime          ``TrtExecutor``: the ``trt`` backend of ``topv.runtime.Pipeline``
    device_kv        the static KV cache in device memory (torch tensors)
    device           GPU identity (name, compute capability) and build-memory sampling
    trt_import       ``import tensorrt`` with install instructions; the TensorRT logger
    polygraphy_inputs  real per-graph inputs and ``polygraphy run`` commands for verification
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
