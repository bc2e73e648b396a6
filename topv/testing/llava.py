"""Random-weight LLaVA models: CLIP, SigLIP or DINOv2 towers with Llama, Mistral or Qwen2 decoders.

Every model is saved with a processor: a word-level tokenizer with a chat template and a CLIP-style image
processor, so ``from_pretrained`` / ``AutoProcessor.from_pretrained`` load it like a real checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID, IMAGE_ID = range(5)

# LLaVA-1.5's conversation format, written for a whitespace word-level tokenizer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image> {% else %}{{ item['text'] }}{% endif %}"
    "{% endfor %} "
    "{% else %}ASSISTANT: "
    "{% for item in message['content'] %}{{ item['text'] }}{% endfor %} </s> "
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LlavaShape:
    """The shape of a LLaVA model: a ViT tower, a 2-layer MLP projector and a Llama-style decoder."""

    # decoder
    text_model_type: str = "llama"
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    vocab_size: int = 0  # 0: size of the word list (+ specials)
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    # vision tower
    vision_model_type: str = "clip_vision_model"
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    image_size: int = 56
    patch_size: int = 14
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    initializer_range: float = 0.02

    def replace(self, **changes: Any) -> "LlavaShape":
        return dataclasses.replace(self, **changes)


# Shapes of real architectures, for benchmarks with random weights.
SHAPES: dict[str, LlavaShape] = {
    "tiny": LlavaShape(),
    # LLaVA-1.5-7B: CLIP ViT-L/14-336 + Llama-2-7B.
    "llava-1.5-7b": LlavaShape(
        hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, num_kv_heads=32, vocab_size=32064,
        max_position_embeddings=4096, vision_hidden_size=1024, vision_intermediate_size=4096, vision_layers=24,
        vision_heads=16, image_size=336, patch_size=14,
    ),
    # Edge-sized (~1.1B decoder, TinyLlama-1.1B shapes with grouped-query attention) + CLIP ViT-L/14-336.
    "llava-edge-1b": LlavaShape(
        hidden_size=2048, intermediate_size=5632, num_layers=22, num_heads=32, num_kv_heads=4, vocab_size=32064,
        max_position_embeddings=2048, vision_hidden_size=1024, vision_intermediate_size=4096, vision_layers=24,
        vision_heads=16, image_size=336, patch_size=14,
    ),
    # The CPU benchmark model of the issue tracker: CLIP-B/14-336 (576 visual tokens) + a ~110M, 12-layer
    # Llama decoder (hidden 768, 12 heads, vocab 32000).
    "cpu-bench": LlavaShape(
        hidden_size=768, intermediate_size=2048, num_layers=12, num_heads=12, num_kv_heads=12, vocab_size=32000,
        max_position_embeddings=2048, vision_hidden_size=768, vision_intermediate_size=3072, vision_layers=12,
        vision_heads=12, image_size=336, patch_size=14,
    ),
}


def default_words(count: int = 200) -> list[str]:
    """Placeholder vocabulary for random models: ``USER:``, ``ASSISTANT:`` and ``w0``..``w{count-1}``."""
    return ["USER:", "ASSISTANT:"] + [f"w{i}" for i in range(count)]


def build_tokenizer(words: Sequence[str], vocab_size: int = 0) -> Any:
    """A whitespace word-level fast tokenizer: specials first, then ``words``, padded to ``vocab_size``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab_list = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
    if vocab_size:
        if vocab_size < len(vocab_list):
            raise ValueError(f"vocab_size {vocab_size} is smaller than the word list ({len(vocab_list)})")
        vocab_list += [f"<extra_{i}>" for i in range(vocab_size - len(vocab_list))]
    vocab = {w: i for i, w in enumerate(vocab_list)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )


def build_processor(tokenizer: Any, shape: LlavaShape, *, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> Any:
    """A ``LlavaProcessor``: CLIP-style resize + centre crop to ``image_size``, the tokenizer, the chat template."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": shape.image_size},
        crop_size={"height": shape.image_size, "width": shape.image_size},
        do_center_crop=True,
        image_mean=list(mean),
        image_std=list(std),
    )
    has_cls = shape.vision_model_type in ("clip_vision_model", "dinov2")  # SigLIP has no CLS token
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape.patch_size,
        vision_feature_select_strategy=shape.vision_feature_select_strategy,
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1 if has_cls else 0,
    )


def llava_config(shape: LlavaShape, vocab_size: int) -> Any:
    """The ``LlavaConfig`` for a shape (image token id 4, eos 2, bos 1, pad 0)."""
    from transformers import LlamaConfig, LlavaConfig, MistralConfig, Qwen2Config

    text_cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[shape.text_model_type]
    text = text_cls(
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        vocab_size=vocab_size,
        max_position_embeddings=shape.max_position_embeddings,
        rope_theta=shape.rope_theta,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=shape.tie_word_embeddings,
        initializer_range=shape.initializer_range,
    )
    import transformers

    common = dict(hidden_size=shape.vision_hidden_size, num_hidden_layers=shape.vision_layers,
                  num_attention_heads=shape.vision_heads, image_size=shape.image_size, patch_size=shape.patch_size)
    towers = {
        "clip_vision_model": ("CLIPVisionConfig", dict(intermediate_size=shape.vision_intermediate_size,
                                                       projection_dim=shape.vision_hidden_size,
                                                       initializer_range=shape.initializer_range)),
        "siglip_vision_model": ("SiglipVisionConfig", dict(intermediate_size=shape.vision_intermediate_size)),
        "dinov2": ("Dinov2Config", dict(mlp_ratio=shape.vision_intermediate_size // shape.vision_hidden_size,
                                        initializer_range=shape.initializer_range)),
    }
    if shape.vision_model_type not in towers:
        raise ValueError(f"build_random_llava makes CLIP, SigLIP or DINOv2 towers; got {shape.vision_model_type!r}")
    name, extra = towers[shape.vision_model_type]
    vision = getattr(transformers, name)(**common, **extra)
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_ID,
        vision_feature_select_strategy=shape.vision_feature_select_strategy,
        vision_feature_layer=shape.vision_feature_layer,
        tie_word_embeddings=shape.tie_word_embeddings,
    )


def build_random_llava(
    shape: LlavaShape | str = "tiny",
    *,
    seed: int = 0,
    words: Sequence[str] | None = None,
    dtype: Any = None,
    attn_implementation: str = "sdpa",
) -> tuple[Any, Any]:
    """``(model, processor)``: a ``LlavaForConditionalGeneration`` with seeded random weights.

    ``shape`` is a :class:`LlavaShape` or a name in :data:`SHAPES`.
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"Unknown model shape {shape!r}; known shapes: {', '.join(SHAPES)}")
        shape = SHAPES[shape]
    tokenizer = build_tokenizer(words if words is not None else default_words(), shape.vocab_size)
    stats = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD} if shape.vision_model_type == "dinov2" else {}
    processor = build_processor(tokenizer, shape, **stats)
    config = llava_config(shape, len(tokenizer))
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    if dtype is not None:
        model = model.to(dtype)
    return model, processor


def save_random_llava(out_dir: str | Path, shape: LlavaShape | str = "tiny", *, seed: int = 0, **kwargs: Any) -> Path:
    """Build a random LLaVA and write it with its processor to ``out_dir`` (a checkpoint folder)."""
    model, processor = build_random_llava(shape, seed=seed, **kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
