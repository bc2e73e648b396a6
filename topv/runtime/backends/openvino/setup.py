"""How the openvino backend opens an export: which graph runs at which precision with which weights,
the compile options, and int8 weights made once per export and kept in topv's cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from topv.artifact import names as n
from topv.artifact.manifest import Manifest
from topv.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16", "f16", "auto")
WEIGHTS = ("int8",)
INSTALL_HINT = "install it with `pip install 'topv[openvino]'` (openvino, and nncf for int8 weights)"


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(f"OpenVINO is not installed; {INSTALL_HINT}, or use backend='ort-cpu'.") from exc
    return openvino


def device_name(core: Any, device: str | None) -> str:
    """``cpu`` -> ``CPU``; any other OpenVINO device by name, checked against the devices present."""
    name = (device or "CPU").strip().upper()
    if name.startswith("CUDA"):
        raise ConfigError(f"device {device!r} is a CUDA device; the openvino backend takes OpenVINO device names "
                          f"({', '.join(core.available_devices)} here). Use backend='ort-cuda' or 'trt' for CUDA.")
    base = name.split(".")[0]
    if base not in ("AUTO", "HETERO", "MULTI") and not any(d == name or d.split(".")[0] == name for d in core.available_devices):
        raise ConfigError(f"OpenVINO has no device {name!r} here; it has {', '.join(core.available_devices)}.")
    return name


def plan(manifest: Manifest, precision: str | None, weights: str | None,
         kept_set: str | None = "float32") -> dict[str, dict[str, Any]]:
    """``{graph: {"precision": f32|bf16|f16|auto, "weights": None|int8}}``: the graphs that decide the kept tokens
    stay float32 and uncompressed unless ``kept_set="follow"`` (:func:`topv.precision.float32_graphs`).

    Raises:
        ConfigError: an unknown precision or weight format, or one the export's dtype cannot take.
    """
    from topv.precision import float32_graphs

    precision = (precision or "f32").lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} on the openvino backend; got {precision!r}.")
    if weights is not None and weights not in WEIGHTS:
        raise ConfigError(f"weights must be 'int8' (or None for the export's own) on the openvino backend; got {weights!r}.")
    if manifest.quantization:
        raise ConfigError("This export has ONNX Runtime int8 weights (topv-export --quantize); the openvino backend runs "
                          "float exports (pass weights='int8' for OpenVINO's own int8 weights).")
    exact = float32_graphs(manifest.pruning.enabled, kept_set)
    return {g: {"precision": "f32" if g in exact else precision, "weights": None if g in exact else weights}
            for g in manifest.graphs}


def compile_options(options: Any, precision: str, device: str) -> dict[str, Any]:
    from topv.config import cpu_threads

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if device.startswith("CPU"):
        config.update(INFERENCE_NUM_THREADS=options.threads or cpu_threads(), NUM_STREAMS=1)
    if precision != "auto":
        config["INFERENCE_PRECISION_HINT"] = precision
    return config


def graph_model(core: Any, folder: Path, manifest: Manifest, graph: str, weights: str | None) -> Any:
    """The graph as an ``ov.Model`` (or a path OpenVINO compiles directly), with int8 weights if asked."""
    from topv.artifact.external import external_tensors

    path = folder / manifest.graphs[graph].file
    external_tensors(folder, path)  # OpenVINO reads the external data a graph names: check it lies inside the folder
    if weights is None:
        return core.read_model(str(path))
    return _int8_model(core, path, manifest, graph)


CACHE_FORMAT = 1  # bump when what is cached or how it is compressed changes
COMPRESSION = {"mode": "INT8_ASYM"}  # nncf.compress_weights arguments (data free, per channel)


def _int8_model(core: Any, path: Path, manifest: Manifest, graph: str) -> Any:
    """NNCF's int8 weights for one graph, made once and kept in ``<cache>/openvino/<key>/`` with the SHA-256 of its
    files (key: the export's file checksums, the graph, the compression and the library versions), so later loads
    read them instead of compressing again; cached files that do not match their checksums are made again."""
    from topv.config import cache_dir

    ov = import_openvino()
    root = cache_dir()
    cached = root / "openvino" / _cache_key(manifest, graph, ov.__version__) if root is not None else None
    model = _read_cached(core, cached, graph) if cached is not None else None
    if model is not None:
        return model
    nncf = _import_nncf()
    log.info("compressing %s to int8 weights with NNCF (once per export)", graph)
    model = nncf.compress_weights(core.read_model(str(path)),
                                  mode=getattr(nncf.CompressWeightsMode, COMPRESSION["mode"]))
    if cached is not None:
        _save_atomically(ov, model, cached, graph)
    return model


def _cache_key(manifest: Manifest, graph: str, ov_version: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        nncf_version = version("nncf")
    except PackageNotFoundError:
        nncf_version = "none"
    files = {rel: rec.sha256 for rel, rec in sorted(manifest.files.items())}
    text = json.dumps({"format": CACHE_FORMAT, "files": files, "graph": graph, "compression": COMPRESSION,
                       "openvino": ov_version, "nncf": nncf_version}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cached(core: Any, folder: Path, graph: str) -> Any:
    """The cached model if its files match the checksums written with them; a damaged entry is removed."""
    from topv.artifact.files import sha256_file

    if not folder.is_dir():
        return None
    try:
        want = json.loads((folder / "sha256.json").read_text())
        for name in (f"{graph}.xml", f"{graph}.bin"):
            if sha256_file(folder / name) != want[name]:
                raise ValueError(f"{name} does not match its checksum")
        return core.read_model(str(folder / f"{graph}.xml"))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        log.warning("the cached int8 weights in %s are unusable (%s); making them again", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _save_atomically(ov: Any, model: Any, folder: Path, graph: str) -> None:
    """Write ``graph.xml``/``.bin`` and their checksums into a fresh folder and rename it into place; a cache that
    cannot be written only costs the next load another compression."""
    from topv.artifact.files import sha256_file

    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        ov.save_model(model, str(tmp / f"{graph}.xml"), compress_to_fp16=False)  # True would make every constant f16
        sums = {name: sha256_file(tmp / name) for name in (f"{graph}.xml", f"{graph}.bin")}
        (tmp / "sha256.json").write_text(json.dumps(sums))
        os.replace(tmp, folder)
    except (OSError, RuntimeError) as exc:
        if not folder.is_dir():  # another process keeping the same weights first is not a failure
            log.warning("could not keep the int8 weights in %s (%s); the next load compresses again", folder, exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _import_nncf() -> Any:
    try:
        import nncf
    except ImportError as exc:
        raise BackendUnavailableError(f"int8 weights on the openvino backend need NNCF; {INSTALL_HINT}.") from exc
    return nncf
