"""``engines.json``: what ``topv-build`` wrote next to the ONNX graphs, and the checks before loading it.

Schema (format :data:`ENGINE_FORMAT`)::

    {
      "format": 1, "topv_version": "...", "created": "2026-...Z",
      "tensorrt_version": "10.3.0",
      "gpu": {"name": "Orin", "compute_capability": "8.7", "total_memory_bytes": ...},
      "precision": "fp16", "strongly_typed": false,
      "workspace_bytes": null, "builder_optimization_level": null, "timing_cache": null,
      "export": {"dtype": "fp32", "opset": 17, "files": {"vision.onnx": "<sha256>", "weights.bin": "<sha256>", ...}},
      "engines": {
        "vision": {"file": "vision.engine", "onnx": "vision.onnx", "precision": "fp16",
                   "profile": {"dynamic": false, "axes": [], "inputs": {"pixel_values": {"min": [...], "opt": [...], "max": [...]}}},
                   "build_seconds": 12.3, "bytes": 123, "sha256": "...",
                   "peak_host_rss_bytes": ..., "peak_device_used_bytes": ...},
        ...
      },
      "peak_memory": {"host_rss_bytes": ..., "host_method": "process RSS, sampled every 50 ms", "device_used_bytes": ..., "device_baseline_bytes": ...,
                      "device_method": "cudaMemGetInfo (cuda-python), sampled every 50 ms"},
      "total_build_seconds": 61.0
    }

A serialized TensorRT engine only runs with the TensorRT version that built it and on the GPU model it was
built for. :func:`compatibility_problems` and :func:`check_compatible` decide that from plain values (the
engine manifest, the running TensorRT version and GPU), so the refusal is testable without TensorRT.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from topv._version import __version__
from topv.errors import ArtifactError, IncompatibleArtifactError
from topv.artifact.files import FileRecord, check_file, inside, read_json

ENGINE_MANIFEST_NAME = "engines.json"
ENGINE_FORMAT = 1
REBUILD_HINT = "Rebuild the engines on this machine: topv-build OUT_DIR --force"


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine was built for (or the one it is about to run on)."""

    name: str
    compute_capability: str  # "8.7"
    total_memory_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "GpuInfo":
        return cls(str(data["name"]), str(data["compute_capability"]), data.get("total_memory_bytes"))


@dataclass
class EngineRecord:
    """One built engine."""

    file: str
    onnx: str
    precision: str
    profile: dict[str, Any]
    build_seconds: float
    bytes: int
    sha256: str
    peak_host_rss_bytes: int | None = None
    peak_device_used_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EngineRecord":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class EngineManifest:
    """The content of ``engines.json``."""

    tensorrt_version: str
    gpu: GpuInfo
    precision: str
    strongly_typed: bool
    engines: dict[str, EngineRecord]
    export: dict[str, Any] = field(default_factory=dict)
    workspace_bytes: int | None = None
    builder_optimization_level: int | None = None
    timing_cache: str | None = None
    peak_memory: dict[str, Any] = field(default_factory=dict)
    total_build_seconds: float = 0.0
    format: int = ENGINE_FORMAT
    topv_version: str = __version__
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "topv_version": self.topv_version,
            "created": self.created,
            "tensorrt_version": self.tensorrt_version,
            "gpu": self.gpu.to_json(),
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "workspace_bytes": self.workspace_bytes,
            "builder_optimization_level": self.builder_optimization_level,
            "timing_cache": self.timing_cache,
            "export": self.export,
            "engines": {name: rec.to_json() for name, rec in self.engines.items()},
            "peak_memory": self.peak_memory,
            "total_build_seconds": self.total_build_seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EngineManifest":
        return cls(
            tensorrt_version=str(data["tensorrt_version"]),
            gpu=GpuInfo.from_json(data["gpu"]),
            precision=str(data["precision"]),
            strongly_typed=bool(data["strongly_typed"]),
            engines={name: EngineRecord.from_json(rec) for name, rec in data["engines"].items()},
            export=dict(data.get("export") or {}),
            workspace_bytes=data.get("workspace_bytes"),
            builder_optimization_level=data.get("builder_optimization_level"),
            timing_cache=data.get("timing_cache"),
            peak_memory=dict(data.get("peak_memory") or {}),
            total_build_seconds=float(data.get("total_build_seconds") or 0.0),
            format=int(data["format"]),
            topv_version=str(data.get("topv_version", "?")),
            created=str(data.get("created", "?")),
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_engine_manifest(folder: str | Path, manifest: EngineManifest) -> Path:
    """Write ``engines.json`` atomically; returns its path."""
    path = Path(folder) / ENGINE_MANIFEST_NAME
    atomic_write_bytes(path, (json.dumps(manifest.to_json(), indent=2) + "\n").encode())
    return path


def read_engine_manifest(folder: str | Path) -> EngineManifest:
    """Read ``engines.json``.

    Raises:
        ArtifactError: no engines were built here, or the file is damaged.
        IncompatibleArtifactError: the file has another format.
    """
    path = Path(folder) / ENGINE_MANIFEST_NAME
    data = read_json(path, damaged=REBUILD_HINT, missing=(
        f"{str(folder)!r} has no {ENGINE_MANIFEST_NAME}: no TensorRT engines were built for it. Build them with "
        "`topv-build OUT_DIR` on the machine that will run them (check first with `topv-check OUT_DIR`)."))
    if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT:
        raise IncompatibleArtifactError(
            f"{path} has engine-manifest format {data.get('format') if isinstance(data, dict) else None!r}; this topv ({__version__}) reads format "
            f"{ENGINE_FORMAT}. {REBUILD_HINT}"
        )
    try:
        return EngineManifest.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path} lacks {exc} or has a malformed entry. {REBUILD_HINT}") from exc


def compatibility_problems(manifest: EngineManifest, *, tensorrt_version: str, gpu: GpuInfo) -> list[str]:
    """Why the engines in ``manifest`` cannot run here (empty when they can).

    TensorRT engines are tied to the exact TensorRT release that built them and to the GPU they were tuned
    on; the compute capability and the device name must both match.
    """
    problems = []
    if str(manifest.tensorrt_version) != str(tensorrt_version):
        problems.append(
            f"they were built with TensorRT {manifest.tensorrt_version} and this is TensorRT {tensorrt_version} "
            "(serialized engines only load in the TensorRT release that built them)"
        )
    built = manifest.gpu
    if str(built.compute_capability) != str(gpu.compute_capability):
        problems.append(
            f"they were built for compute capability {built.compute_capability} ({built.name}) and this GPU, "
            f"{gpu.name}, has compute capability {gpu.compute_capability}"
        )
    elif built.name != gpu.name:
        problems.append(
            f"they were built on a {built.name} and this GPU is a {gpu.name} (engines are tuned for one GPU model)"
        )
    return problems


def check_compatible(manifest: EngineManifest, *, tensorrt_version: str, gpu: GpuInfo, folder: str | Path = "OUT_DIR") -> None:
    """Refuse engines from another TensorRT version or GPU.

    Raises:
        IncompatibleArtifactError: with every reason and the rebuild command.
    """
    problems = compatibility_problems(manifest, tensorrt_version=tensorrt_version, gpu=gpu)
    if problems:
        raise IncompatibleArtifactError(
            f"The TensorRT engines in {str(folder)!r} cannot run here: " + "; ".join(problems) + ". "
            + REBUILD_HINT.replace("OUT_DIR", str(folder))
        )


def export_fingerprint(export_manifest: Any) -> dict[str, str]:
    """SHA-256 (from ``manifest.json``) of the ONNX files and the shared weights the engines were built from."""
    names = [g.file for g in export_manifest.graphs.values()]
    if export_manifest.weights.get("file"):
        names.append(export_manifest.weights["file"])
    return {name: export_manifest.files[name].sha256 for name in names if name in export_manifest.files}


def check_matches_export(manifest: EngineManifest, export_manifest: Any, folder: str | Path = "OUT_DIR") -> None:
    """Refuse engines built from other graphs or weights than the folder now holds (a re-export after the build).

    Raises:
        IncompatibleArtifactError: a graph or the weights changed, or a graph has no engine.
    """
    built = manifest.export.get("files", {})
    now = export_fingerprint(export_manifest)
    changed = sorted(name for name, digest in now.items() if built.get(name) != digest)
    missing = sorted(g for g in export_manifest.graphs if g not in manifest.engines)
    if changed or missing:
        what = []
        if changed:
            what.append(f"{', '.join(changed)} changed since the engines were built")
        if missing:
            what.append(f"no engine was built for {', '.join(missing)}")
        raise IncompatibleArtifactError(
            f"The TensorRT engines in {str(folder)!r} do not match the exported graphs: {'; '.join(what)}. "
            + REBUILD_HINT.replace("OUT_DIR", str(folder))
        )


def verify_engine_files(folder: str | Path, manifest: EngineManifest, *, checksums: bool = True) -> None:
    """Check every engine file's size and (optionally) SHA-256 against ``engines.json``.

    Raises:
        ArtifactError: an engine file is missing or truncated.
        ChecksumMismatchError: an engine file's content differs.
    """
    folder = Path(folder)
    hint = REBUILD_HINT.replace("OUT_DIR", str(folder))
    for graph, rec in manifest.engines.items():
        check_file(inside(folder, rec.file, f"the {graph} engine"), FileRecord(rec.sha256, rec.bytes),
                   what=f"the {graph} engine {rec.file}", hint=hint, checksum=checksums)
