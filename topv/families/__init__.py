"""Model families as plug-ins: the registry and the lookups (light: no torch or transformers imports).

Adding a family: write a :class:`~topv.families.base.Family` subclass in its own module and add an
instance to :data:`FAMILIES`; ``tests/families/test_registry.py`` fails until every family, tower and
decoder it declares has a parity test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from topv.artifact.files import read_json
from topv.errors import ArtifactError, UnsupportedModelError
from topv.families.base import Family, Processor
from topv.families.llava import LlavaFamily
from topv.families.qwen2_vl import Qwen2VLFamily

FAMILIES: dict[str, Family] = {f.name: f for f in (LlavaFamily(), Qwen2VLFamily())}

__all__ = ["FAMILIES", "Family", "Processor", "family_for_config", "get_family", "read_model_config", "refuse_remote_code"]


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise UnsupportedModelError(f"Unknown model family {name!r}; topv supports {', '.join(FAMILIES)}.")
    return FAMILIES[name]


def family_for_config(config: dict[str, Any]) -> Family:
    """The family that handles a checkpoint's ``config.json``.

    Raises:
        UnsupportedModelError: no family declares the architecture.
    """
    archs = config.get("architectures") or []
    for family in FAMILIES.values():
        if set(archs) & set(family.architectures) or (not archs and config.get("model_type") in family.model_types):
            return family
    supported = ", ".join(a for f in FAMILIES.values() for a in f.architectures)
    raise UnsupportedModelError(f"Unsupported architecture {archs or config.get('model_type')!r}; topv supports {supported}.")


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    """A checkpoint's ``config.json`` as a dict, with a clear error when it is missing or broken."""
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise ArtifactError(f"{str(model_dir)!r} is not a folder; pass a Hugging Face checkpoint folder (config.json, weights, processor files).")
    data = read_json(path, damaged="The checkpoint is corrupt.", missing=(
        f"{str(model_dir)!r} is not a Hugging Face model folder: {path.name} is missing. Pass a folder written by "
        "save_pretrained (config.json, model.safetensors, processor files)."))
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} must hold a JSON object; found {type(data).__name__}. The checkpoint is corrupt.")
    return data


def refuse_remote_code(folder: str | Path) -> None:
    """Refuse a folder whose configs ask transformers to run code shipped with it (``auto_map``, ``*.py``).

    topv never runs code from a model or export folder (it loads with ``trust_remote_code=False``).
    """
    folder = Path(folder)
    code = sorted(p.name for p in folder.glob("*.py"))
    for path in folder.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ("auto_map" in data or "auto_map" in (data.get("processor_config") or {})):
            code.append(f"{path.name} (auto_map)")
    if code:
        raise ArtifactError(
            f"{str(folder)!r} asks to run code shipped with it ({', '.join(code)}); topv never executes code from a model "
            "or export folder. Use a checkpoint whose classes are built into transformers, without auto_map."
        )
