"""The ``torch`` backend: the PyTorch reference pipeline behind the runtime API, on any device.

It reads the export folder's manifest for the pruning settings (layer, keep, TopV config) and loads the
*source* checkpoint recorded there (or ``model_dir``), so users without ONNX Runtime can run the same
requests, and benchmarks have a baseline that executes transformers' own modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from topv.errors import ArtifactError, BackendUnavailableError


class TorchExecutor:
    def __init__(self, folder: Path, manifest: dict[str, Any], *, threads: int | None = None, device: str | None = None,
                 model_dir: str | Path | None = None) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError("The torch backend needs PyTorch: pip install torch (and transformers).") from exc
        from topv.pruning.config import TopVConfig
        from topv.reference.loading import load_model
        from topv.reference.pipeline import ReferencePipeline

        source = Path(model_dir or manifest["model"]["source"])
        if not (source / "config.json").is_file():
            raise ArtifactError(
                f"The torch backend runs the source checkpoint, recorded as {str(source)!r}, which is not available; "
                "pass model_dir= (Pipeline.load(..., model_dir=...)) pointing at the Hugging Face checkpoint."
            )
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.float16 if manifest.get("dtype") == "fp16" else torch.float32
        model, _ = load_model(source, dtype=dtype, device=str(self.device))
        pruning = manifest["pruning"]
        self.pipe = ReferencePipeline(
            model,
            layer=pruning["layer"],
            keep=pruning["keep"],
            method="topv" if pruning["enabled"] else "none",
            config=TopVConfig.from_dict(pruning["config"]),
        )

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def new_state(self) -> dict[str, Any]:
        return {}

    def vision(self, pixel_values: np.ndarray) -> Any:
        features = self.pipe.image_features(self.torch.from_numpy(pixel_values).to(self.device))
        self._sync()
        return features

    def prefill(self, state: dict[str, Any], input_ids: np.ndarray, features: Any) -> dict[str, Any]:
        ids = self.torch.from_numpy(np.ascontiguousarray(input_ids)).to(self.device)
        result = self.pipe.prefill(ids, image_features=features)
        self._sync()
        state["prefill"] = result
        timings = {k: v for k, v in result.timings.items() if k != "vision"}
        return {
            "logits": result.logits[0].float().cpu().numpy(),
            "kept_indices": result.kept_indices,
            "kept_length": result.kept_length,
            "timings": timings,
        }

    def decode(self, state: dict[str, Any], token: int, position: int) -> np.ndarray:
        prefill = state["prefill"]
        logits = self.pipe.decode_step(prefill, token, position - prefill.next_position)
        return logits[0].float().cpu().numpy()
