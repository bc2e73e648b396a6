"""Which GPU this is, and how much memory a build takes (host RSS and device memory, sampled).

GPU identity comes from cuda-python, else torch, else ``nvidia-smi``. Device memory is read with
``cudaMemGetInfo`` (total - free, the whole device: TensorRT allocates with its own allocator, so
``torch.cuda.max_memory_allocated`` would not see a build; on Jetson the figure is the shared system
memory). Host memory is the process RSS (psutil, else ``/proc/self/status``) plus the lifetime peak
``ru_maxrss``.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from dataclasses import dataclass
from typing import Any, Callable

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


def device_meminfo_reader(index: int = 0) -> tuple[Callable[[], int] | None, str]:
    """A function returning the device's used bytes (total - free), and how it measures; (None, why) if none."""
    cudart = _cudart()
    if cudart is not None:
        def used_cudart() -> int:
            err, free, total = cudart.cudaMemGetInfo()
            if int(err) != 0:
                raise RuntimeError(str(err))
            return int(total) - int(free)

        try:
            cudart.cudaSetDevice(index)
            used_cudart()
            return used_cudart, "cudaMemGetInfo (cuda-python)"
        except Exception as exc:  # noqa: BLE001
            log.debug("cudaMemGetInfo through cuda-python failed: %s", exc)
    try:
        import torch
    except ImportError:
        return None, "unavailable (install cuda-python or torch)"
    if not torch.cuda.is_available():
        return None, "unavailable (no CUDA device visible to torch)"

    def used_torch() -> int:
        free, total = torch.cuda.mem_get_info(index)
        return int(total) - int(free)

    return used_torch, "cudaMemGetInfo (torch.cuda.mem_get_info)"


def host_rss_reader() -> tuple[Callable[[], int] | None, str]:
    """A function returning this process's resident set size in bytes."""
    try:
        import psutil

        proc = psutil.Process()
        return (lambda: int(proc.memory_info().rss)), "psutil RSS"
    except ImportError:
        pass

    def from_proc() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise OSError("no VmRSS line")

    try:
        from_proc()
        return from_proc, "/proc/self/status VmRSS"
    except OSError:
        return None, "unavailable"


def max_rss_bytes() -> int | None:
    """Peak RSS of this process over its lifetime (``ru_maxrss``; KiB on Linux)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024
    except (ImportError, OSError):
        return None


@dataclass
class MemoryPeaks:
    host_rss_bytes: int | None = None
    device_used_bytes: int | None = None
    device_baseline_bytes: int | None = None


class MemorySampler:
    """Samples host RSS and device used memory in a background thread while a ``with`` block runs."""

    def __init__(self, host: Callable[[], int] | None, device: Callable[[], int] | None, interval: float = 0.05) -> None:
        self.host, self.device, self.interval = host, device, interval
        self.peaks = MemoryPeaks()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        for attr, fn in (("host_rss_bytes", self.host), ("device_used_bytes", self.device)):
            if fn is None:
                continue
            try:
                value = fn()
            except Exception:  # noqa: BLE001 - a failed sample is skipped
                continue
            current = getattr(self.peaks, attr)
            if current is None or value > current:
                setattr(self.peaks, attr, value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "MemorySampler":
        if self.device is not None:
            try:
                self.peaks.device_baseline_bytes = self.device()
            except Exception:  # noqa: BLE001
                pass
        self._sample()
        self._thread = threading.Thread(target=self._run, name="topv-memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
