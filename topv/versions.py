"""Versions of the libraries topv runs with, recorded in manifests and benchmark results."""

from __future__ import annotations

import importlib
import platform

from topv._version import __version__

LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "numpy", "tensorrt")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "topv": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            versions[name] = "not installed"
    return versions
