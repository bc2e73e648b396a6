"""Which GPU this is: cuda-python, else torch, else ``nvidia-smi`` (memory probes: ``topv.memory``)."""

from __future__ import annotations

import logging
import subprocess
from typing import Any

from topv.engines.engine_manifest import GpuInfo
from topv.errors import BackendUnavailableError

log = logging.getLogger(__name__)


def _cudart() -> Any | None:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return None
    return cudart


def _gpu_from_cudart(cudart: Any, index: int) -> GpuInfo:
    err, props = cudart.cudaGetDeviceProperties(index)
    if int(err) != 0:
        raise RuntimeError(f"cudaGetDeviceProperties({index}) failed: {err}")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name.strip("\x00 "), f"{props.major}.{props.minor}", int(props.totalGlobalMem))


def _gpu_from_torch(index: int) -> GpuInfo | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(index)
    props = torch.cuda.get_device_properties(index)
    return GpuInfo(torch.cuda.get_device_name(index), f"{major}.{minor}", int(props.total_memory))


def _gpu_from_smi(index: int) -> GpuInfo | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--id={index}", "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    parts = [p.strip() for p in out.split(",")]
    if len(parts) < 2:
        return None
    total = int(float(parts[2]) * 2**20) if len(parts) > 2 and parts[2].replace(".", "").isdigit() else None
    return GpuInfo(parts[0], parts[1], total)


def detect_gpu(index: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``index``.

    Raises:
        BackendUnavailableError: no CUDA device can be queried.
    """
    cudart = _cudart()
    if cudart is not None:
        try:
            return _gpu_from_cudart(cudart, index)
        except Exception as exc:  # noqa: BLE001 - fall through to the next source
            log.debug("cuda-python could not describe GPU %d: %s", index, exc)
    for source in (_gpu_from_torch, _gpu_from_smi):
        info = source(index)
        if info is not None:
            return info
    raise BackendUnavailableError(
        f"Cannot identify CUDA device {index} (tried cuda-python, torch and nvidia-smi). TensorRT engines are built "
        "for one GPU; run topv-build on a machine with an NVIDIA GPU and its driver, and install cuda-python "
        "(`pip install cuda-python`) or torch so topv can record which GPU the engines are for."
    )
