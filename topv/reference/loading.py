"""Loading a Hugging Face checkpoint of a supported family and its processor from a local folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from topv.errors import ArtifactError
from topv.families import Family, Processor, family_for_config, read_model_config, refuse_remote_code


def load_model(model_dir: str | Path, *, dtype: Any = None, device: str = "cpu",
               attn_implementation: str = "sdpa") -> tuple[Any, Processor]:
    """Load ``(model, processor)`` from a local checkpoint folder (never from the network, never running its code).

    Raises:
        ArtifactError: the folder is not a checkpoint, asks to run code, or its weights cannot be read.
        UnsupportedModelError: no family handles the architecture (checked before loading weights).
    """
    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    family = family_for_config(config)
    family.spec(config)  # fail fast on unsupported towers and decoders
    refuse_remote_code(model_dir)
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation, "local_files_only": True, "trust_remote_code": False}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = family.model_class(config).from_pretrained(str(model_dir), **kwargs)
    except Exception as exc:  # noqa: BLE001 - loaders raise many types (safetensors, OSError, ...); re-raised typed
        raise ArtifactError(
            f"Could not load the model weights from {str(model_dir)!r} ({type(exc).__name__}: {str(exc)[:300]}). The "
            "checkpoint is incomplete or damaged; copy it again."
        ) from None
    # Inference only: parameters stop requiring grad (no autograd graph, no global state touched).
    model = model.to(device).eval().requires_grad_(False)
    return model, family.load_processor(model_dir)


def model_family(model: Any) -> Family:
    return family_for_config(model.config.to_dict())


def model_spec(model: Any) -> Any:
    """The :class:`~topv.spec.ModelSpec` of a loaded model (at its processor's default resolution)."""
    return model_family(model).spec(model.config.to_dict())
