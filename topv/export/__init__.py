"""Export a Hugging Face LLaVA checkpoint to ONNX graphs with the TopV pruning step inside.

``from topv.export import export_model, ExportOptions`` (torch, transformers and onnx load on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"export_model": "topv.export.exporter", "ExportOptions": "topv.export.exporter"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'topv.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
