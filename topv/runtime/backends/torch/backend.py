"""``torch``: the same graphs as PyTorch modules (``topv.graphs.modules``) over the source checkpoint.

The modules are the ones the export traced, built from the checkpoint the manifest records (or
``model_dir``) with the manifest's pruning settings, so this backend runs wherever PyTorch does (CPU,
CUDA) without ONNX Runtime, and the export validates ONNX Runtime against it graph by graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from topv.artifact.manifest import KVLayout, Manifest
from topv.errors import ArtifactError, BackendUnavailableError
from topv.runtime.backends.torch_arrays import TorchArrays
from topv.runtime.backends.base import Backend, BackendOptions
from topv.runtime.kv import KVCache, torch_allocator


class TorchBackend(TorchArrays, Backend):
    name = "torch"

    def __init__(self, kv: KVLayout, modules: dict[str, Any], device: Any) -> None:
        import torch

        super().__init__(kv)
        self.torch = torch
        self.modules = modules
        self.device = torch.device(device)

    @classmethod
    def load(cls, folder: Path, manifest: Manifest, options: BackendOptions) -> "TorchBackend":
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError("The torch backend needs PyTorch: pip install torch (and transformers).") from exc
        from topv.graphs.build import build_graph_modules
        from topv.families import get_family
        from topv.reference.loading import load_model

        source = Path(options.model_dir or manifest.model_source)
        if not (source / "config.json").is_file():
            raise ArtifactError(
                f"The torch backend runs the source checkpoint, recorded as {str(source)!r}, which is not available; "
                "pass model_dir= (Pipeline.load(..., model_dir=...)) pointing at the Hugging Face checkpoint."
            )
        if options.threads:
            torch.set_num_threads(options.threads)
        from topv.config import check_device

        device = torch.device(check_device(options.device, default="cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.float16 if manifest.dtype == "fp16" else torch.float32
        model, _ = load_model(source, dtype=dtype, device=str(device), attn_implementation="eager")
        p = manifest.pruning
        modules = build_graph_modules(model, get_family(manifest.spec.family), manifest.spec, layer=p.layer, keep=p.keep,
                                      config=p.config)
        return cls(manifest.kv, modules, device)

    def run(self, graph: str, feeds: dict[str, Any], axes: dict[str, int]) -> dict[str, Any]:
        with self.torch.no_grad():
            return self.modules[graph](feeds)

    def close(self) -> None:
        """Drop the model's modules and return torch's cached device blocks (the next backend's memory peak is its own)."""
        self.modules.clear()
        from topv.memory import release_device_memory

        release_device_memory(self.device.type == "cuda")
