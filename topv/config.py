"""Environment variables topv reads, all in one place.

TOPV_CUDA_GRAPH   "1" captures the decode step of the GPU backends (ort-cuda, trt) as a CUDA graph; the
                  default when ``BackendOptions.cuda_graph`` is None (default off until verified on a GPU).
TOPV_THREADS      default CPU thread count for ONNX Runtime / torch (default: all available cores).
TOPV_CACHE_DIR    where topv keeps "verified" stamps of export folders (default: $XDG_CACHE_HOME/topv or
                  ~/.cache/topv); "0" or "off" disables the stamps, so every load hashes every file.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def cpu_threads() -> int:
    """CPU threads for a backend given none: ``TOPV_THREADS`` if set, else every core this process may run on."""
    configured = default_threads()
    if configured:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def cache_dir() -> Path | None:
    """topv's cache folder, or None when ``TOPV_CACHE_DIR`` disables it."""
    raw = os.environ.get("TOPV_CACHE_DIR")
    if raw is not None and raw.strip().lower() in ("0", "off", "false", "no", ""):
        return None
    if raw:
        return Path(raw).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "topv"


def check_device(device: str | None, *, default: str = "cpu") -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, and for CUDA a device that torch can see.

    Raises:
        ConfigError: not a device name.
        BackendUnavailableError: a CUDA device was asked for and none is usable.
    """
    from topv.errors import BackendUnavailableError

    text = (device or default).strip().lower()
    if not (text == "cpu" or text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit())):
        raise ConfigError(f"device must be cpu, cuda or cuda:N; got {device!r}.")
    if text.startswith("cuda"):
        try:
            import torch
        except ImportError:
            raise BackendUnavailableError(f"device {text!r} needs torch with CUDA; install it, or use cpu.") from None
        index = int(text[5:]) if ":" in text else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise BackendUnavailableError(
                f"device {text!r} was asked for, but this machine has {torch.cuda.device_count()} CUDA device(s) visible "
                "to torch (a CPU build of torch, no GPU or no driver); use cpu, or run on a machine with an NVIDIA GPU."
            )
    return text
