"""Loading a Hugging Face LLaVA checkpoint and its processor from a local folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from topv.errors import ArtifactError, UnsupportedModelError
from topv.models.spec import model_spec


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict, with a clear error when it is missing or broken."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ArtifactError(
            f"{str(model_dir)!r} is not a Hugging Face model folder: {path.name} is missing. "
            "Pass a folder written by save_pretrained (config.json, model.safetensors, processor files)."
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupt.") from exc


def load_model(model_dir: str | Path, *, dtype: Any = None, device: str = "cpu", attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """Load ``(model, processor)`` from a local checkpoint folder (never from the network).

    Raises:
        ArtifactError: the folder is not a checkpoint.
        UnsupportedModelError: the architecture is not supported (checked before loading weights).
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model_spec(read_model_config(model_dir))  # fail fast on unsupported architectures
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation, "local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = LlavaForConditionalGeneration.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"Could not load the model weights from {str(model_dir)!r}: {exc}") from exc
    # Inference only: parameters stop requiring grad (no autograd graph, no global state touched).
    model = model.to(device).eval().requires_grad_(False)
    try:
        processor = AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"Could not load the processor (tokenizer + image processor) from {str(model_dir)!r}: {exc}. "
            "Save it next to the model with processor.save_pretrained()."
        ) from exc
    if not hasattr(processor, "image_processor"):
        raise UnsupportedModelError(f"The processor in {str(model_dir)!r} has no image processor; a LLaVA processor is required.")
    return model, processor
