"""What a model family declares: the one place that knows a model's layout.

A family is a small class (see ``llava.py``): which transformers architectures it handles and with
which towers and decoders, how to read its geometry from ``config.json`` (:class:`~topv.spec.ModelSpec`),
where its vision tower, projector, decoder layers and LM head are, how positions work (1-D RoPE or
3-D M-RoPE), how prompts are formatted and image tokens expanded (its processor), and which export
patches it needs. Everything else (the reference pipeline, the export, the runtime) asks the family
and is written once.

Every decoder layer is Llama-style pre-norm, ``A = H + Attn(input_layernorm(H))``,
``Z = post_attention_layernorm(A)``, ``H' = A + MLP(Z)``; TopV's sources are ``H`` and its targets ``Z``
at the visual positions of layer K, in every family.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from topv.spec import ModelSpec


class Processor(Protocol):
    """A checkpoint's tokenizer, image processor and chat template, as topv uses them."""

    tokenizer: Any

    def encode(self, image: Any, prompt: str) -> dict[str, np.ndarray]:
        """``{"input_ids": (1, S) int64, "pixel_values": float32, ...}`` for one image and one question."""

    def model_view(self, image: Any) -> np.ndarray:
        """The image as the vision tower sees it (resized/cropped), ``(H, W, 3)`` uint8, for kept-token maps."""

    def save(self, folder: Path) -> None:
        """Write the files :meth:`Family.load_processor` reads back."""


class Family:
    """Base class of the family plug-ins; subclasses fill in the class attributes and the methods."""

    name: ClassVar[str]
    architectures: ClassVar[tuple[str, ...]]
    model_types: ClassVar[tuple[str, ...]]  # config.json ``model_type`` values (a config without ``architectures``)
    text_models: ClassVar[tuple[str, ...]]
    vision_models: ClassVar[tuple[str, ...]]

    # ------------------------------------------------------------------ config level (no torch)
    def spec(self, config: dict[str, Any], image_hw: tuple[int, int] | None = None) -> ModelSpec:
        """The model's geometry; ``image_hw`` fixes the input resolution of families whose grid depends on it.

        Raises:
            UnsupportedModelError: a tower, decoder or setting the family does not handle.
        """
        raise NotImplementedError

    def default_image_hw(self, config: dict[str, Any], processor_dir: Path) -> tuple[int, int] | None:
        """The resolution an export uses when none is given (None: the model has a fixed one)."""
        return None

    def request_spec(self, spec: ModelSpec, inputs: dict[str, Any]) -> ModelSpec:
        """The geometry of one request (families whose token grid follows the image size override this)."""
        return spec

    # ------------------------------------------------------------------ modules (torch)
    def model_class(self, config: dict[str, Any]) -> Any:
        """The transformers class that loads the checkpoint."""
        raise NotImplementedError

    def language_model(self, model: Any) -> Any:
        """The decoder: ``embed_tokens``, ``layers``, ``norm`` and ``rotary_emb``."""
        return model.model.language_model

    def lm_head(self, model: Any) -> Any:
        return model.lm_head

    def image_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        """``(1, N, D)`` visual tokens from the processor's outputs, exactly as the model computes them."""
        raise NotImplementedError

    def vision_graph(self, model: Any, spec: ModelSpec) -> Any:
        """A module ``pixel_values -> image_features (1, N, D)`` at the spec's fixed resolution, for export."""
        raise NotImplementedError

    def position_ids(self, input_ids: Any, spec: ModelSpec) -> Any:
        """Prompt position ids, ``(1, S)`` or ``(3, 1, S)``; traceable (static shapes, no Python branching on data)."""
        raise NotImplementedError

    def decode_position_ids(self, position: Any) -> Any:
        """Position ids of one new token from its ``(1, 1)`` position."""
        return position

    def hf_rotary(self, lm: Any, hidden: Any, position_ids: Any) -> Any:
        """``position_embeddings`` as the transformers decoder layers take them."""
        return lm.rotary_emb(hidden, position_ids)

    def rotary(self, lm: Any, hidden: Any, position_ids: Any) -> tuple[Any, Any]:
        """``(cos, sin)`` of shape ``(1, S, head_dim)`` for the standard ``x * cos + rotate_half(x) * sin``."""
        return lm.rotary_emb(hidden, position_ids)

    def export_patches(self, half: bool) -> contextlib.AbstractContextManager:
        """Reversible patches applied while the graphs are traced (and while they are checked in PyTorch)."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ processing
    def load_processor(self, folder: Path) -> Processor:
        """The processor saved in ``folder`` (never running code shipped with it)."""
        raise NotImplementedError

    def processor_for(self, processor: Processor, spec: ModelSpec) -> Processor:
        """The processor an export of ``spec`` saves: one that gives every input the spec's fixed geometry."""
        return processor

    def wrap_processor(self, processor: Any) -> Processor:
        """A :class:`Processor` from a transformers processor object (or the processor itself)."""
        raise NotImplementedError
