"""LLaVA (``LlavaForConditionalGeneration``): a ViT tower, a projector and a Llama-style decoder.

Towers: CLIP and DINOv2 (a leading CLS token; ``vision_feature_select_strategy`` "default" drops it,
"full" keeps it as an extra visual token that is never pruned) and SigLIP (no CLS: "full" only).
Decoders: Llama, Mistral, Qwen2. One image of ``image_size`` pixels (resized and centre-cropped by the
CLIP-style image processor) gives a ``(image_size / patch_size)^2`` patch grid; positions are 1-D.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from topv.errors import ArtifactError, InputError, UnsupportedModelError
from topv.families.base import Family
from topv.spec import ModelSpec

_HAS_CLS = {"clip_vision_model": True, "dinov2": True, "siglip_vision_model": False}


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    return cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)


class LlavaProcessor:
    """The checkpoint's own ``LlavaProcessor`` (chat template, image-token expansion, CLIP-style pixels)."""

    def __init__(self, hf_processor: Any) -> None:
        self.hf = hf_processor
        self.tokenizer = hf_processor.tokenizer
        self.image_token = getattr(hf_processor, "image_token", None) or "<image>"

    def format_prompt(self, prompt: str) -> str:
        """The chat template's text for one image followed by ``prompt`` (``"<image>\\n" + prompt`` without one)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"The prompt must be a non-empty string; got {prompt!r}.")
        if self.image_token in prompt:
            raise InputError(
                f"The prompt contains the image placeholder {self.image_token!r}; topv inserts it for the image. "
                "Remove it from the question (one image per prompt)."
            )
        if getattr(self.hf, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.hf.apply_chat_template(conversation, add_generation_prompt=True)
        return f"{self.image_token}\n{prompt}"

    def encode(self, image: Any, prompt: str) -> dict[str, np.ndarray]:
        from topv.inputs import load_image

        text = self.format_prompt(prompt)
        out = self.hf(images=load_image(image), text=text, return_tensors="np")
        return {"input_ids": np.asarray(out["input_ids"], dtype=np.int64),
                "pixel_values": np.ascontiguousarray(out["pixel_values"], dtype=np.float32)}

    def model_view(self, image: Any) -> np.ndarray:
        from topv.inputs import load_image

        ip = self.hf.image_processor
        pixels = np.asarray(ip(images=load_image(image), return_tensors="np")["pixel_values"], dtype=np.float32)[0]
        x = pixels.transpose(1, 2, 0) * np.asarray(ip.image_std, np.float32) + np.asarray(ip.image_mean, np.float32)
        return (x.clip(0, 1) * 255).round().astype(np.uint8)

    def save(self, folder: Path) -> None:
        self.hf.save_pretrained(folder)


class LlavaFamily(Family):
    name = "llava"
    architectures = ("LlavaForConditionalGeneration",)
    model_types = ("llava",)
    text_models = ("llama", "mistral", "qwen2")
    vision_models = tuple(_HAS_CLS)

    def spec(self, config: dict[str, Any], image_hw: tuple[int, int] | None = None) -> ModelSpec:
        text, vision = _get(config, "text_config"), _get(config, "vision_config")
        text_type, vision_type = _get(text, "model_type"), _get(vision, "model_type")
        if text_type not in self.text_models:
            raise UnsupportedModelError(f"Unsupported LLaVA decoder {text_type!r}; supported decoders are {', '.join(self.text_models)}.")
        if vision_type not in self.vision_models:
            raise UnsupportedModelError(
                f"Unsupported LLaVA vision tower {vision_type!r}; supported towers are {', '.join(self.vision_models)}."
            )
        strategy = _get(config, "vision_feature_select_strategy", "default")
        if strategy not in ("default", "full"):
            raise UnsupportedModelError(f"Unsupported vision_feature_select_strategy {strategy!r}; use 'default' or 'full'.")
        if not _HAS_CLS[vision_type] and strategy == "default":
            raise UnsupportedModelError(
                f"A {vision_type} tower has no CLS token, so vision_feature_select_strategy 'default' would drop a "
                "patch; set it to 'full' in the model config."
            )
        size = _get(vision, "image_size")
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        if image_hw is not None and tuple(image_hw) != (size, size):
            raise InputError(f"A LLaVA model takes {size}x{size} images (its vision tower's size); --image-size does not apply.")
        g = size // int(_get(vision, "patch_size"))
        extra = 1 if (_HAS_CLS[vision_type] and strategy == "full") else 0
        hidden, heads = int(_get(text, "hidden_size")), int(_get(text, "num_attention_heads"))
        image_token_id = _get(config, "image_token_id", _get(config, "image_token_index"))
        return ModelSpec(
            family=self.name, architecture=self.architectures[0], text_model_type=text_type, vision_model_type=vision_type,
            num_layers=int(_get(text, "num_hidden_layers")), hidden_size=hidden, num_heads=heads,
            num_kv_heads=int(_get(text, "num_key_value_heads") or heads), head_dim=int(_get(text, "head_dim") or hidden // heads),
            vocab_size=int(_get(text, "vocab_size")), image_token_id=int(image_token_id), image_hw=(size, size), grid_hw=(g, g),
            num_visual_tokens=g * g + extra, num_extra_visual_tokens=extra,
            max_position_embeddings=_get(text, "max_position_embeddings"),
        )

    def model_class(self, config: dict[str, Any]) -> Any:
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def image_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        import torch

        cfg = model.config
        tower = model.model.vision_tower
        param = next(tower.parameters())
        out = model.model.get_image_features(
            pixel_values=torch.as_tensor(inputs["pixel_values"]).to(device=param.device, dtype=param.dtype),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            return_dict=True,
        )
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        if isinstance(feats, (list, tuple)):
            feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats], dim=0)
        return feats.reshape(1, -1, feats.shape[-1])

    def vision_graph(self, model: Any, spec: ModelSpec) -> Any:
        """pixel_values (1, 3, H, W) -> image_features (1, N, D): tower, feature select, projector."""
        import torch

        from topv.families.patches import FunctionModule

        tower, projector = model.model.vision_tower, model.model.multi_modal_projector
        layers = model.config.vision_feature_layer
        layers = [layers] if isinstance(layers, int) else list(layers)
        drop_cls = model.config.vision_feature_select_strategy == "default"

        def forward(pixel_values: Any) -> Any:
            # Half-precision towers: softmax and LayerNorm run in float32 (Cast -> op -> Cast in the graph).
            with self.export_patches(pixel_values.dtype in (torch.float16, torch.bfloat16)):
                out = tower(pixel_values, output_hidden_states=True, return_dict=True)
            feats = [out.hidden_states[i][:, 1:] if drop_cls else out.hidden_states[i] for i in layers]
            return projector(torch.cat(feats, dim=-1))

        return FunctionModule(forward, tower=tower, projector=projector)

    def position_ids(self, input_ids: Any, spec: ModelSpec) -> Any:
        import torch

        return torch.cumsum(torch.ones_like(input_ids), dim=1) - 1

    def export_patches(self, half: bool) -> Any:
        from topv.families.patches import fp32_reductions

        return fp32_reductions(half)

    def load_processor(self, folder: Path) -> LlavaProcessor:
        from transformers import LlavaProcessor as HfLlavaProcessor

        from topv.families import refuse_remote_code

        refuse_remote_code(folder)
        try:
            hf = HfLlavaProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, TypeError) as exc:
            raise ArtifactError(
                f"Could not load the LLaVA processor (tokenizer + image processor) from {str(folder)!r}: {exc}. "
                "Save it next to the model with processor.save_pretrained()."
            ) from None
        return LlavaProcessor(hf)

    def wrap_processor(self, hf_processor: Any) -> LlavaProcessor:
        return hf_processor if isinstance(hf_processor, LlavaProcessor) else LlavaProcessor(hf_processor)

