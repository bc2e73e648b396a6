"""What topv needs to know about a LLaVA-family model, read once from its config.

Supported: ``LlavaForConditionalGeneration`` with a Llama-style decoder (``llama``, ``mistral``,
``qwen2``) and a ViT-style vision tower (``clip_vision_model``, ``siglip_vision_model``, ``dinov2``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from topv.errors import LayerOutOfRangeError, UnsupportedModelError

SUPPORTED_ARCHITECTURES = ("LlavaForConditionalGeneration",)
SUPPORTED_TEXT_MODELS = ("llama", "mistral", "qwen2")
SUPPORTED_VISION_MODELS = ("clip_vision_model", "siglip_vision_model", "dinov2")
# Vision towers whose first output token is a CLS token (not part of the patch grid).
_VISION_WITH_CLS = {"clip_vision_model": True, "siglip_vision_model": False, "dinov2": True}


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


@dataclass(frozen=True)
class ModelSpec:
    """Geometry of a supported LLaVA model.

    Attributes:
        num_layers, hidden_size, num_heads, num_kv_heads, head_dim, vocab_size: the decoder.
        image_token_id: the placeholder id the processor repeats once per visual token.
        grid_hw: the vision tower's patch grid (rows, cols); patches are in raster order.
        num_visual_tokens: visual tokens per image in the prompt (the grid, plus CLS with "full").
        num_extra_visual_tokens: leading visual tokens outside the grid (CLS with "full"); always kept.
    """

    architecture: str
    text_model_type: str
    vision_model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    image_token_id: int
    image_size: int
    patch_size: int
    grid_hw: tuple[int, int]
    vision_feature_select_strategy: str
    num_visual_tokens: int
    num_extra_visual_tokens: int

    @property
    def num_grid_tokens(self) -> int:
        return self.grid_hw[0] * self.grid_hw[1]

    def check_layer(self, layer: int) -> int:
        """Validate the pruning layer K: layers 0..K see all tokens, K+1.. the kept ones."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= self.num_layers - 2:
            raise LayerOutOfRangeError(
                f"The pruning layer must be an index in 0..{self.num_layers - 2} (the decoder has "
                f"{self.num_layers} layers and at least one must follow the pruning layer); got {layer!r}. "
                f"The paper's setting is 2."
            )
        return layer

    def kv_bytes_per_token_per_layer(self, dtype_bytes: int) -> int:
        return 2 * self.num_kv_heads * self.head_dim * dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grid_hw"] = list(self.grid_hw)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        data = dict(data)
        data["grid_hw"] = tuple(data["grid_hw"])
        return cls(**data)


def model_spec(config: Any) -> ModelSpec:
    """Read a :class:`ModelSpec` from a ``LlavaConfig`` (object or dict).

    Raises:
        UnsupportedModelError: the architecture, decoder or vision tower is not supported.
    """
    archs = _get(config, "architectures") or []
    model_type = _get(config, "model_type")
    if model_type != "llava" and not set(archs) & set(SUPPORTED_ARCHITECTURES):
        raise UnsupportedModelError(
            f"Unsupported architecture {archs or model_type!r}; topv supports {', '.join(SUPPORTED_ARCHITECTURES)} "
            f"(model_type 'llava') with a {'/'.join(SUPPORTED_TEXT_MODELS)} decoder and a "
            f"{'/'.join(SUPPORTED_VISION_MODELS)} vision tower."
        )
    text = _get(config, "text_config")
    vision = _get(config, "vision_config")
    text_type = _get(text, "model_type")
    vision_type = _get(vision, "model_type")
    if text_type not in SUPPORTED_TEXT_MODELS:
        raise UnsupportedModelError(
            f"Unsupported LLaVA decoder {text_type!r}; supported decoders are {', '.join(SUPPORTED_TEXT_MODELS)}."
        )
    if vision_type not in SUPPORTED_VISION_MODELS:
        raise UnsupportedModelError(
            f"Unsupported LLaVA vision tower {vision_type!r}; supported towers are {', '.join(SUPPORTED_VISION_MODELS)}."
        )
    strategy = _get(config, "vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise UnsupportedModelError(f"Unsupported vision_feature_select_strategy {strategy!r}; use 'default' or 'full'.")
    has_cls = _VISION_WITH_CLS[vision_type]
    if not has_cls and strategy == "default":
        raise UnsupportedModelError(
            f"A {vision_type} tower has no CLS token, so vision_feature_select_strategy 'default' would drop a "
            "patch; set it to 'full' in the model config."
        )
    image_size = _get(vision, "image_size")
    patch_size = _get(vision, "patch_size")
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0]
    g = int(image_size) // int(patch_size)
    extra = 1 if (has_cls and strategy == "full") else 0
    hidden = int(_get(text, "hidden_size"))
    heads = int(_get(text, "num_attention_heads"))
    kv_heads = int(_get(text, "num_key_value_heads") or heads)
    head_dim = int(_get(text, "head_dim") or hidden // heads)
    image_token_id = _get(config, "image_token_id")
    if image_token_id is None:
        image_token_id = _get(config, "image_token_index")
    return ModelSpec(
        architecture=SUPPORTED_ARCHITECTURES[0],
        text_model_type=text_type,
        vision_model_type=vision_type,
        num_layers=int(_get(text, "num_hidden_layers")),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=int(_get(text, "vocab_size")),
        image_token_id=int(image_token_id),
        image_size=int(image_size),
        patch_size=int(patch_size),
        grid_hw=(g, g),
        vision_feature_select_strategy=strategy,
        num_visual_tokens=g * g + extra,
        num_extra_visual_tokens=extra,
    )
