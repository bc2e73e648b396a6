"""Qwen2-VL and Qwen2.5-VL (``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``).

A ViT over 14-pixel patches (Qwen2.5: window attention in most blocks), a 2x2 patch merger, and a Qwen2
decoder with 3-D rotary positions (M-RoPE). The number of visual tokens depends on the image size, so an
export fixes it: every image is resized to ``image_hw`` (multiples of 28 pixels) by the exported folder's
processor, which gives a ``(H/28) x (W/28)`` token grid; the vision tower's window index and sequence
boundaries become constants of that grid. TopV's spatial and centre terms use this merged grid.

Positions (transformers' ``get_rope_index`` for one image): text tokens count up on all three axes; the
image token at merged row r, column c of a grid starting at position p sits at (t, h, w) = (p, p + r, p + c);
text after the image continues at ``p + max(rows, cols)``. Kept visual tokens keep their three positions,
and decoding continues after the largest prompt position, exactly where the unpruned sequence would.
Sources/targets of TopV are read as for every family: layer K's input and its post-attention norm output
(Qwen2's decoder layer is the same pre-norm structure as Llama's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from topv.errors import ConfigError, UnsupportedModelError
from topv.families.base import Family
from topv.spec import ModelSpec

_ARCHS = {"Qwen2VLForConditionalGeneration": "qwen2_vl", "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl"}
#: Default export resolution cap: the largest square within the processor's max_pixels, at most 896 x 896
#: (1024 visual tokens), so a default export stays deployable; --image-size chooses any other.
DEFAULT_MAX_SIDE = 896


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    return cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)


def _architecture(config: dict[str, Any]) -> str:
    """The transformers class of a config (from ``architectures``, else from ``model_type``)."""
    for arch in _get(config, "architectures") or []:
        if arch in _ARCHS:
            return arch
    by_type = {v: k for k, v in _ARCHS.items()}
    return by_type.get(_get(config, "model_type"), "Qwen2VLForConditionalGeneration")


class Qwen2VLFamily(Family):
    name = "qwen2_vl"
    architectures = tuple(_ARCHS)
    model_types = tuple(_ARCHS.values())
    text_models = ("qwen2_vl_text", "qwen2_5_vl_text")
    vision_models = ("qwen2_vl_vision", "qwen2_5_vl_vision")

    def spec(self, config: dict[str, Any], image_hw: tuple[int, int] | None = None) -> ModelSpec:
        text, vision = _get(config, "text_config") or config, _get(config, "vision_config") or {}
        patch, merge = int(_get(vision, "patch_size", 14)), int(_get(vision, "spatial_merge_size", 2))
        factor = patch * merge
        arch = _architecture(config)
        image_hw = tuple(image_hw) if image_hw is not None else (DEFAULT_MAX_SIDE, DEFAULT_MAX_SIDE)
        if len(image_hw) != 2 or any(not isinstance(v, int) or v <= 0 or v % factor for v in image_hw):
            raise ConfigError(f"A {arch} export needs an image size (height, width) in multiples of {factor} pixels "
                              f"(patch {patch} x merge {merge}); got {image_hw!r}. For example --image-size "
                              f"{factor * 16}x{factor * 16}.")
        grid = (image_hw[0] // factor, image_hw[1] // factor)
        hidden, heads = int(_get(text, "hidden_size")), int(_get(text, "num_attention_heads"))
        return ModelSpec(
            family=self.name, architecture=arch, text_model_type=_get(text, "model_type", f"{_ARCHS[arch]}_text"),
            vision_model_type=_get(vision, "model_type", f"{_ARCHS[arch]}_vision"),
            num_layers=int(_get(text, "num_hidden_layers")), hidden_size=hidden, num_heads=heads,
            num_kv_heads=int(_get(text, "num_key_value_heads") or heads), head_dim=hidden // heads,
            vocab_size=int(_get(text, "vocab_size")), image_token_id=int(_get(config, "image_token_id")),
            image_hw=image_hw, grid_hw=grid, num_visual_tokens=grid[0] * grid[1], position_dims=3,
            max_position_embeddings=_get(text, "max_position_embeddings"),
        )

    def default_image_hw(self, config: dict[str, Any], processor_dir: Path) -> tuple[int, int]:
        """A fixed size saved with the processor (an export), else the largest square within max_pixels (capped)."""
        from topv.families.qwen_processing import load_qwen_processor

        processor = load_qwen_processor(processor_dir)
        if processor.image_hw is not None:
            return processor.image_hw
        factor, limit = processor.image_config.factor, processor.image_config.max_pixels
        side = max(factor, min(DEFAULT_MAX_SIDE, int(limit**0.5)) // factor * factor)
        return side, side

    def request_spec(self, spec: ModelSpec, inputs: dict[str, Any]) -> ModelSpec:
        """The spec of one request: its own grid when the processor resized to the image (no fixed size)."""
        import dataclasses

        t, h, w = (int(v) for v in inputs["image_grid_thw"][0])
        if t != 1:
            raise UnsupportedModelError("topv runs one still image per prompt; videos (t > 1) are not supported.")
        factor_h, factor_w = spec.image_hw[0] // spec.grid_hw[0], spec.image_hw[1] // spec.grid_hw[1]
        grid = (h // 2, w // 2)
        return dataclasses.replace(spec, grid_hw=grid, num_visual_tokens=grid[0] * grid[1],
                                   image_hw=(grid[0] * factor_h, grid[1] * factor_w))

    def model_class(self, config: dict[str, Any]) -> Any:
        import transformers

        return getattr(transformers, _architecture(config))

    def image_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        import torch

        visual = model.model.visual
        param = next(visual.parameters())
        pixels = torch.as_tensor(inputs["pixel_values"]).to(device=param.device, dtype=param.dtype)
        grid = torch.as_tensor(inputs["image_grid_thw"]).to(param.device)
        feats = model.model.get_image_features(pixels, grid).pooler_output
        feats = torch.cat(list(feats), dim=0) if isinstance(feats, (list, tuple)) else feats
        return feats.reshape(1, -1, feats.shape[-1])

    def vision_graph(self, model: Any, spec: ModelSpec) -> Any:
        """pixel_values (N, C*T*P*P) -> image_features (1, N/4, D) at the spec's fixed grid; the grid's position ids,
        sequence boundaries and (Qwen2.5) window index are constants of the graph."""
        import torch
        from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

        from topv.families.patches import FunctionModule

        visual = model.model.visual
        cfg = visual.config
        patch, merge = int(cfg.patch_size), int(cfg.spatial_merge_size)
        grid = torch.tensor([[1, spec.image_hw[0] // patch, spec.image_hw[1] // patch]], dtype=torch.int64)
        fixed = {"position_ids": get_vision_position_ids(grid, merge), "cu_seqlens": get_vision_cu_seqlens(grid)}
        if hasattr(cfg, "window_size"):  # Qwen2.5-VL
            fixed["window_index"], fixed["cu_window_seqlens"] = get_vision_window_index(grid, merge, cfg.window_size, cfg.patch_size)

        def forward(pixel_values: Any) -> Any:
            with self.export_patches(pixel_values.dtype in (torch.float16, torch.bfloat16)):
                out = visual(pixel_values, grid_thw=grid, **fixed).pooler_output
            return out.reshape(1, -1, out.shape[-1])

        return FunctionModule(forward, visual=visual)

    def position_ids(self, input_ids: Any, spec: ModelSpec) -> Any:
        """``(3, 1, S)`` M-RoPE positions of a prompt holding one image of the spec's grid (traceable)."""
        import torch

        rows, cols = spec.grid_hw
        n = rows * cols
        is_image = input_ids[0] == spec.image_token_id
        index = torch.cumsum(torch.ones_like(input_ids[0]), dim=0) - 1
        offset = torch.argmax(is_image.to(torch.int64))
        j = (index - offset).clamp(0, n - 1)
        text = torch.where(index >= offset + n, index - n + max(rows, cols), index)
        t = torch.where(is_image, offset, text)
        row = j // cols
        h = torch.where(is_image, offset + row, text)
        w = torch.where(is_image, offset + j - row * cols, text)  # j mod cols, without Mod (not in topv-check's list)
        return torch.stack([t, h, w]).unsqueeze(1)

    def export_patches(self, half: bool) -> Any:
        from topv.families.patches import fp32_reductions

        return fp32_reductions(half)

    def load_processor(self, folder: Path) -> Any:
        from topv.families import refuse_remote_code
        from topv.families.qwen_processing import load_qwen_processor

        refuse_remote_code(folder)
        return load_qwen_processor(folder)

    def processor_for(self, processor: Any, spec: ModelSpec) -> Any:
        """The same processor, resizing every image to the export's fixed ``image_hw``."""
        from topv.families.qwen_processing import QwenProcessor

        return QwenProcessor(processor.tokenizer, processor.image_config, processor.chat_template, image_hw=spec.image_hw,
                             processor_class=processor.processor_class)

    def wrap_processor(self, processor: Any) -> Any:
        from topv.families.qwen_processing import QwenProcessor

        if isinstance(processor, QwenProcessor):
            return processor
        raise UnsupportedModelError(
            f"A Qwen2-VL model needs topv's own processor (transformers' Qwen processors need torchvision); got "
            f"{type(processor).__name__}. Pass None with a checkpoint folder, or topv.families.qwen_processing."
            "load_qwen_processor(folder)."
        )
