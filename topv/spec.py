"""``ModelSpec``: the geometry topv needs of a vision-language model, read once by its family plug-in.

Standard library only: export folders record it in ``manifest.json`` and every backend reads it there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from topv.errors import ArtifactError, LayerOutOfRangeError


@dataclass(frozen=True)
class ModelSpec:
    """Geometry of a supported model.

    Attributes:
        family: the family plug-in that read it (``llava``, ``qwen2_vl``).
        architecture: the transformers class name.
        num_layers, hidden_size, num_heads, num_kv_heads, head_dim, vocab_size: the decoder.
        image_token_id: the placeholder id the prompt repeats once per visual token.
        image_hw: pixels (height, width) the vision graph takes.
        grid_hw: the visual tokens' grid (rows, cols), tokens in raster order.
        num_visual_tokens: visual tokens per image in the prompt (the grid plus leading extra tokens).
        num_extra_visual_tokens: leading visual tokens outside the grid (a CLS token); always kept.
        position_dims: 1 for RoPE positions (1, S); 3 for M-RoPE (t, h, w) positions (3, 1, S).
        max_position_embeddings: the decoder's position limit (None when the config has none).
    """

    family: str
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
    image_hw: tuple[int, int]
    grid_hw: tuple[int, int]
    num_visual_tokens: int
    num_extra_visual_tokens: int = 0
    position_dims: int = 1
    max_position_embeddings: int | None = None

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

    def head_layers(self, layer: int, pruned: bool) -> int:
        """Index of the last layer that sees every token: ``layer`` when pruning, else the whole decoder
        runs in the head (the layer then plays no part, so any value is accepted)."""
        return self.check_layer(layer) if pruned else self.num_layers - 1

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_hw"] = list(self.image_hw)
        d["grid_hw"] = list(self.grid_hw)
        return d

    @classmethod
    def from_json(cls, data: Any) -> "ModelSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not {"family", "num_layers", "grid_hw"} <= set(data):
            raise ArtifactError(
                f"manifest.json: model.spec must be an object with the model's geometry; found {type(data).__name__}. "
                "The folder is damaged or from another topv; re-export it."
            )
        try:
            values = {k: v for k, v in data.items() if k in names}
            values["image_hw"] = tuple(int(x) for x in values["image_hw"])
            values["grid_hw"] = tuple(int(x) for x in values["grid_hw"])
            spec = cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"manifest.json: model.spec is malformed ({exc}); re-export the model.") from None
        ints = [spec.num_layers, spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.vocab_size,
                spec.num_visual_tokens, *spec.grid_hw, *spec.image_hw]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in ints) \
                or spec.num_grid_tokens + spec.num_extra_visual_tokens != spec.num_visual_tokens:
            raise ArtifactError("manifest.json: model.spec holds inconsistent sizes; the folder was edited. Re-export it.")
        return spec
