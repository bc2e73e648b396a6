"""Export a Hugging Face VLM checkpoint to ONNX graphs with the TopV pruning step inside.

``from topv.export import export_model, ExportOptions`` (torch, transformers and onnx load on first use).
"""

from __future__ import annotations

from topv._lazy import lazy_attributes

_LAZY = {"export_model": "topv.export.exporter", "ExportOptions": "topv.export.exporter"}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
