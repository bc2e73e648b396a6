"""Random-weight Qwen2-VL and Qwen2.5-VL models, saved as the released checkpoints ship them.

The tokenizer is a small byte-level BPE wired like ``Qwen2Tokenizer`` (Qwen2's pre-tokenizer, NFC, byte-level
decoding) followed by the 14 Qwen special tokens in their real order; the chat template is the released one.
A saved folder holds ``config.json``, ``model.safetensors``, ``generation_config.json`` (greedy-friendly: no
sampling or repetition penalty), ``preprocessor_config.json`` in the Hub layout, the tokenizer files and
``chat_template.jinja``, and no ``processor_config.json`` (whose processor class needs torchvision).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from topv.families.qwen_processing import QwenImageConfig, QwenProcessor

# The released Qwen2-VL / Qwen2.5-VL chat template (the same for both; chat_template.json of the Hub repos).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's added tokens in their real order (ids 151643..151656 in the released vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)

# Qwen2's pre-tokenizer split (transformers/models/qwen2/tokenization_qwen2.py).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_CORPUS = (
    "system user assistant You are a helpful assistant.",
    "Describe the image. What is in this picture? How many objects are there? What color is the shape?",
    "The quick brown fox jumps over the lazy dog. A red square, a green circle and a blue triangle.",
    " ".join(f"w{i}" for i in range(200)),
    "0123456789 , . ? ! : ; ' \" ( ) [ ] - + = /\n\n",
)


@dataclass(frozen=True)
class QwenShape:
    """The shape of a Qwen2-VL (``arch="qwen2_vl"``) or Qwen2.5-VL (``arch="qwen2_5_vl"``) model.

    ``vision_hidden_size`` is the ViT width and ``hidden_size`` the decoder's (the merger's output) in both;
    ``window_size`` (pixels) and ``fullatt_block_indexes`` apply to Qwen2.5-VL only. ``min_pixels`` /
    ``max_pixels`` bound the image area of the saved preprocessor (the tiny shapes give at most 4x6 merged tokens).
    """

    family: ClassVar[str] = "qwen2_vl"
    arch: str = "qwen2_vl"
    # decoder
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 448  # > the tokenizer's length, as in the released models (151936 > 151665)
    mrope_section: tuple[int, int, int] = (2, 3, 3)  # sums to head_dim / 2
    max_position_embeddings: int = 4096
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    # vision tower
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_heads: int = 4
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    window_size: int = 56
    fullatt_block_indexes: tuple[int, ...] = (1,)
    # image processor
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 24
    initializer_range: float = 0.02

    @property
    def text_model_type(self) -> str:
        """The ``model_type`` of transformers' text config (``qwen2_vl_text`` / ``qwen2_5_vl_text``)."""
        return f"{self.arch}_text"

    @property
    def vision_model_type(self) -> str:
        """The ``model_type`` of transformers' vision config (``qwen2_vl_vision`` / ``qwen2_5_vl_vision``)."""
        return f"{self.arch}_vision"

    def replace(self, **changes: Any) -> "QwenShape":
        return dataclasses.replace(self, **changes)


_QWEN25_VISION = dict(vision_depth=32, vision_hidden_size=1280, vision_intermediate_size=3420, vision_heads=16,
                      window_size=112, fullatt_block_indexes=(7, 15, 23, 31), min_pixels=3136, max_pixels=12845056)

SHAPES: dict[str, QwenShape] = {
    "tiny-qwen2-vl": QwenShape(),
    "tiny-qwen2.5-vl": QwenShape(arch="qwen2_5_vl", vision_depth=4, fullatt_block_indexes=(1, 3)),
    # Qwen/Qwen2.5-VL-3B-Instruct config.json.
    "qwen2.5-vl-3b": QwenShape(
        arch="qwen2_5_vl", hidden_size=2048, intermediate_size=11008, num_layers=36, num_heads=16, num_kv_heads=2,
        vocab_size=151936, mrope_section=(16, 24, 24), max_position_embeddings=128000, tie_word_embeddings=True,
        **_QWEN25_VISION),
    # Qwen/Qwen2.5-VL-7B-Instruct config.json.
    "qwen2.5-vl-7b": QwenShape(
        arch="qwen2_5_vl", hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4,
        vocab_size=152064, mrope_section=(16, 24, 24), max_position_embeddings=128000, **_QWEN25_VISION),
}


def build_tokenizer() -> Any:
    """A ``Qwen2Tokenizer``: a byte-level BPE trained on a fixed corpus, then the Qwen special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                        byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=480, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer = Qwen2Tokenizer(tokenizer_object=tok, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", errors="replace", model_max_length=32768,
                               split_special_tokens=False, clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _resolve(shape: QwenShape | str) -> QwenShape:
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"Unknown model shape {shape!r}; known shapes: {', '.join(SHAPES)}")
        return SHAPES[shape]
    return shape


def qwen_config(shape: QwenShape, ids: dict[str, int]) -> Any:
    """The ``Qwen2VLConfig`` / ``Qwen2_5_VLConfig`` of a shape; ``ids`` maps the special tokens to their ids."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    head_dim = shape.hidden_size // shape.num_heads
    if sum(shape.mrope_section) != head_dim // 2:
        raise ValueError(f"mrope_section {shape.mrope_section} must sum to head_dim / 2 = {head_dim // 2}")
    text = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads, max_position_embeddings=shape.max_position_embeddings,
        rms_norm_eps=shape.rms_norm_eps, initializer_range=shape.initializer_range,
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta,
                         "mrope_section": list(shape.mrope_section)},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], tie_word_embeddings=shape.tie_word_embeddings,
    )
    vision = dict(depth=shape.vision_depth, num_heads=shape.vision_heads, in_channels=3, patch_size=shape.patch_size,
                  spatial_merge_size=shape.merge_size, temporal_patch_size=shape.temporal_patch_size,
                  initializer_range=shape.initializer_range)
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  tie_word_embeddings=shape.tie_word_embeddings)
    if shape.arch == "qwen2_vl":
        if shape.vision_intermediate_size % shape.vision_hidden_size:
            raise ValueError("Qwen2-VL's vision MLP is an integer multiple (mlp_ratio) of its width")
        # Qwen2-VL's vision hidden_size is the merger's OUTPUT width (the decoder's); embed_dim is the ViT width.
        vision.update(embed_dim=shape.vision_hidden_size, hidden_size=shape.hidden_size, hidden_act="quick_gelu",
                      mlp_ratio=shape.vision_intermediate_size // shape.vision_hidden_size)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    if shape.arch == "qwen2_5_vl":
        vision.update(hidden_size=shape.vision_hidden_size, intermediate_size=shape.vision_intermediate_size,
                      out_hidden_size=shape.hidden_size, hidden_act="silu", window_size=shape.window_size,
                      fullatt_block_indexes=list(shape.fullatt_block_indexes), tokens_per_second=2)
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    raise ValueError(f"QwenShape.arch must be 'qwen2_vl' or 'qwen2_5_vl'; got {shape.arch!r}")


def model_class(arch: str) -> Any:
    """``Qwen2VLForConditionalGeneration`` or ``Qwen2_5_VLForConditionalGeneration``."""
    import transformers

    return {"qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
            "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration}[arch]


def build_random_qwen(shape: QwenShape | str = "tiny-qwen2-vl", seed: int = 0, *, dtype: Any = None,
                      attn_implementation: str = "sdpa") -> tuple[Any, QwenProcessor]:
    """``(model, processor)``: a Qwen2-VL / Qwen2.5-VL with seeded random weights and its :class:`QwenProcessor`.

    ``shape`` is a :class:`QwenShape` or a name in :data:`SHAPES`.
    """
    import torch
    from transformers import GenerationConfig

    shape = _resolve(shape)
    tokenizer = build_tokenizer()
    if len(tokenizer) > shape.vocab_size:
        raise ValueError(f"vocab_size {shape.vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = qwen_config(shape, ids)
    for c in (config, config.text_config, config.vision_config):
        c._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = model_class(shape.arch)(config).eval()
    if dtype is not None:
        model = model.to(dtype)
    # The Instruct repos ship sampling settings and repetition_penalty=1.05; a test model decodes plainly.
    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
                                               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]])
    image_config = QwenImageConfig(patch_size=shape.patch_size, merge_size=shape.merge_size,
                                   temporal_patch_size=shape.temporal_patch_size, min_pixels=shape.min_pixels,
                                   max_pixels=shape.max_pixels)
    processor_class = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}[shape.arch]
    return model, QwenProcessor(tokenizer, image_config, CHAT_TEMPLATE, processor_class=processor_class)


def save_random_qwen(out_dir: str | Path, shape: QwenShape | str = "tiny-qwen2-vl", seed: int = 0,
                     **kwargs: Any) -> Path:
    """Build a random Qwen2-VL / Qwen2.5-VL and write it to ``out_dir`` as a released checkpoint is laid out."""
    model, processor = build_random_qwen(shape, seed, **kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save(out)
    return out
