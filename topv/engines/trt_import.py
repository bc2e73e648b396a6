"""Importing ``tensorrt`` with a message that says how to install it."""

from __future__ import annotations

import logging
from typing import Any

from topv.errors import BackendUnavailableError

log = logging.getLogger("topv.engines")

MIN_MAJOR = 10

INSTALL_HINT = (
    "On x86-64 machines with data-center or desktop NVIDIA GPUs install it from NVIDIA's package index: "
    "`pip install tensorrt --extra-index-url https://pypi.nvidia.com` (the wheels bundle the TensorRT "
    "libraries for CUDA 12; pick tensorrt-cu11 for CUDA 11). On Jetson, TensorRT ships with JetPack "
    "(`sudo apt install nvidia-jetpack`); use the system python3, or a virtualenv created with "
    "--system-site-packages. Check with: python3 -c 'import tensorrt; print(tensorrt.__version__)'."
)


def import_tensorrt() -> Any:
    """``import tensorrt`` (version 10 or newer).

    Raises:
        BackendUnavailableError: tensorrt is missing, broken, or older than 10.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT is not installed (the Python module `tensorrt` cannot be imported: {exc}). {INSTALL_HINT} "
            "Without TensorRT, `topv-check OUT_DIR --target tensorrt` still reports whether the graphs will build."
        ) from exc
    version = getattr(tensorrt, "__version__", "0")
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_MAJOR:
        raise BackendUnavailableError(
            f"TensorRT {version} is installed; topv needs TensorRT {MIN_MAJOR} or newer (tensor-address "
            f"execution, INT64 I/O, strongly typed networks). {INSTALL_HINT}"
        )
    return tensorrt


def make_logger(trt: Any, level: int = logging.WARNING) -> Any:
    """A ``trt.ILogger`` that forwards to :mod:`logging` and keeps the errors for the failure message."""

    severity = trt.ILogger.Severity
    to_logging = {
        severity.INTERNAL_ERROR: logging.ERROR,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, sev: Any, msg: str) -> None:
            py_level = to_logging.get(sev, logging.INFO)
            if py_level >= logging.ERROR:
                self.errors.append(str(msg))
            if py_level >= level:
                log.log(py_level, "TensorRT: %s", msg)

    return _Logger()
