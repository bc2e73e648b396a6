"""Environment variables topv reads, all in one place.

TOPV_CUDA_GRAPH   "1" captures the decode step of the GPU backends (ort-cuda, trt) as a CUDA graph; the
                  default when ``BackendOptions.cuda_graph`` is None (default off until verified on a GPU).
TOPV_THREADS      default CPU thread count for ONNX Runtime / torch (default: all available cores).
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


def cuda_graph_default() -> bool:
    return env_flag("TOPV_CUDA_GRAPH", False)


def default_threads() -> int | None:
    return env_int("TOPV_THREADS")
