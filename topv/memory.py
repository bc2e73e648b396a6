"""Memory probes and the one peak sampler, shared by ``topv-bench`` and ``topv-build``.

Host memory is the process RSS (psutil, else ``/proc/self/status``) and the lifetime peak ``ru_maxrss``.
Device memory is ``cudaMemGetInfo`` (total - free, the whole device: TensorRT and ONNX Runtime allocate
with their own allocators, so torch's counters would not see them), through cuda-python or torch.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)


def host_rss() -> int | None:
    """This process's resident set size in bytes (None when it cannot be read)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    return _proc_status("VmRSS")


def memory_note() -> str:
    """``RSS x GiB, peak y GiB`` of this process, for progress lines."""
    rss, peak = host_rss(), max_rss_bytes()
    return f"RSS {rss / 2**30:.2f} GiB, peak {peak / 2**30:.2f} GiB" if rss and peak else "memory unknown"


def peak_rss_since_exec() -> int | None:
    """This process's peak RSS since it started its program (``VmHWM``: reset at exec, unlike ``ru_maxrss``, which
    a spawned child inherits from its parent); None off Linux."""
    return _proc_status("VmHWM")


def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def max_rss_bytes() -> int | None:
    """Peak RSS of this process over its lifetime (``ru_maxrss``; KiB on Linux)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024
    except (ImportError, OSError):
        return None


def trim_host_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op
    elsewhere): between the graphs of an export, freed tensors otherwise stay in this process's RSS."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def release_device_memory(on_cuda: bool) -> None:
    """Collect what was just dropped and, on CUDA, return torch's cached blocks to the driver: device memory is read
    with ``cudaMemGetInfo``, which counts torch's cache, so the next measurement would include this one's."""
    import gc

    gc.collect()
    if on_cuda:
        import torch

        torch.cuda.empty_cache()


def device_used_probe(index: int = 0) -> tuple[Callable[[], int] | None, str]:
    """A function returning device ``index``'s used bytes, and how it measures; ``(None, why)`` without one."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            cudart = None
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
        except Exception as exc:  # noqa: BLE001 - fall back to torch
            log.debug("cudaMemGetInfo through cuda-python failed: %s", exc)
    try:
        import torch
    except ImportError:
        return None, "unavailable (install cuda-python or torch)"
    if not torch.cuda.is_available():
        return None, "unavailable (no CUDA device)"

    def used_torch() -> int:
        free, total = torch.cuda.mem_get_info(index)
        return int(total) - int(free)

    return used_torch, "cudaMemGetInfo (torch.cuda.mem_get_info)"


class PeakSampler:
    """Samples a probe in a background thread while a ``with`` block runs; keeps the baseline and the peak."""

    def __init__(self, probe: Callable[[], int | None] | None, interval: float = 0.005) -> None:
        self.probe = probe
        self.interval = interval
        self.baseline: int | None = None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> None:
        if self.probe is None:
            return
        try:
            value = self.probe()
        except Exception:  # noqa: BLE001 - a failed sample is skipped
            return
        if value is not None and (self.peak is None or value > self.peak):
            self.peak = value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def __enter__(self) -> "PeakSampler":
        self._record()
        self.baseline = self.peak
        if self.probe is not None:
            self._thread = threading.Thread(target=self._loop, name="topv-memory-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._record()
