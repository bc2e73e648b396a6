"""Environment variables topv reads, all in one place.

TOPV_ORT_CUDA_GRAPH   "1" captures the ort-cuda decode step as a CUDA graph (experimental; default off).
TOPV_TRT_CUDA_GRAPH   "1" captures the trt decode step as a CUDA graph (experimental; default off).
TOPV_THREADS          default CPU thread count for ONNX Runtime / torch (default: all available cores).
"""

from __future__ import annotations

import os

from topv.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_flag(name: str, default: bool = False) -> bool:
    """Parse a boolean environment variable; anything but the usual spellings is an error."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off.")


def env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer.") from None
    if value < 1:
        raise ConfigError(f"{name} must be >= 1; got {value}.")
    return value


def ort_cuda_graph() -> bool:
    return env_flag("TOPV_ORT_CUDA_GRAPH", False)


def trt_cuda_graph() -> bool:
    return env_flag("TOPV_TRT_CUDA_GRAPH", False)


def default_threads() -> int | None:
    return env_int("TOPV_THREADS")
