"""Qwen2-VL / Qwen2.5-VL processing without torchvision: chat template, image tokens and pixels.

transformers' ``Qwen2VLProcessor`` cannot be built without torchvision (it requires a video processor), so
this module does what it does for one image and one question, with the same numbers as
``Qwen2VLProcessor`` + ``Qwen2VLImageProcessorPil``:

* **pixels**: RGB uint8, resized (PIL, on uint8, bicubic) to ``smart_resize``'s size (multiples of
  ``patch_size * merge_size`` within ``[min_pixels, max_pixels]``) or to a fixed ``image_hw``; then
  ``x * rescale_factor`` in float64 -> float32, ``(x - mean) / std``; then one row per patch, rows in 2x2
  merge-block order, each row a ``(C, temporal_patch_size, P, P)`` patch (the frame repeated in time);
* **text**: the chat template renders ``[image, question]`` with one ``<|image_pad|>``, which becomes
  ``grid_t * grid_h * grid_w / merge_size**2`` copies; the text is tokenized once;
* ``mm_token_type_ids`` (1 on image tokens): transformers 5.x computes M-RoPE positions from it and silently
  falls back to 1-D positions in ``generate()`` without it.

A fixed ``image_hw`` gives every image the same number of visual tokens (a static export). Nothing here runs
code from a checkpoint folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topv.errors import ArtifactError, ConfigError, InputError

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
#: Tokens a question may not contain: topv places the image itself (one image per prompt).
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", IMAGE_TOKEN, VIDEO_TOKEN)
#: ``image_processor_type`` values of a Qwen2-VL image processor (Qwen2.5-VL reuses it).
IMAGE_PROCESSOR_TYPES = ("Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast", "Qwen2VLImageProcessorPil")
#: preprocessor_config.json key holding topv's fixed resolution (transformers ignores it).
FIXED_HW_KEY = "topv_image_hw"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' ``smart_resize``: the ``(H, W)`` multiples of ``factor`` nearest the image's size whose area is
    within ``[min_pixels, max_pixels]``, keeping the aspect ratio (Python's round: half to even)."""
    if max(height, width) / min(height, width) > 200:
        raise InputError(f"The image is {width}x{height}; Qwen2-VL takes aspect ratios up to 200. Crop it first.")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class QwenImageConfig:
    """The image processor's settings (``preprocessor_config.json``; defaults are transformers')."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = 3  # PIL.Image.BICUBIC
    do_rescale: bool = True
    do_normalize: bool = True

    @property
    def factor(self) -> int:
        """Pixels per merged visual token along each side (28 for the released models)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> "QwenImageConfig":
        """Read an image-processor dict in the Hub layout (``min_pixels``/``max_pixels``) or the transformers 5
        layout (``size: {shortest_edge, longest_edge}``, pixel counts); the former wins, as in transformers.

        Raises:
            ArtifactError: a value of the wrong kind or out of range, or not a Qwen2-VL image processor.
        """
        def bad(key: str, expected: str, found: Any = None) -> ArtifactError:
            found = data.get(key) if found is None else found
            return ArtifactError(f"{source}: {key!r} must be {expected}; found {found!r}. Fix the file or re-save "
                                 "the processor from the original checkpoint.")

        kind = data.get("image_processor_type")
        if kind is not None and kind not in IMAGE_PROCESSOR_TYPES:
            raise ArtifactError(f"{source} describes a {kind!r}; a Qwen2-VL / Qwen2.5-VL checkpoint has a "
                                f"{IMAGE_PROCESSOR_TYPES[0]!r}. Pass the folder of a Qwen2-VL or Qwen2.5-VL checkpoint.")
        if data.get("do_resize", True) is not True:
            raise bad("do_resize", "true (the vision tower takes sizes in multiples of patch_size * merge_size)")
        size = data.get("size") or {}
        if not isinstance(size, dict):
            raise bad("size", "an object {shortest_edge, longest_edge} (pixel counts)")
        values: dict[str, Any] = {"min_pixels": size.get("shortest_edge", cls.min_pixels),
                                  "max_pixels": size.get("longest_edge", cls.max_pixels)}
        values.update({k: data[k] for k in ("min_pixels", "max_pixels") if data.get(k) is not None})
        for key in ("patch_size", "merge_size", "temporal_patch_size", "resample", "rescale_factor",
                    "do_rescale", "do_normalize", "image_mean", "image_std"):
            if data.get(key) is not None:
                values[key] = data[key]
        for key in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels", "resample"):
            v = values.get(key, getattr(cls, key))
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "resample" else 1):
                raise bad(key, "a positive integer", v)
        if values.get("resample", cls.resample) > 5:
            raise bad("resample", "a PIL resampling filter code (0..5; 3 is bicubic)")
        if values["min_pixels"] > values["max_pixels"]:
            raise bad("min_pixels", f"at most max_pixels ({values['max_pixels']})", values["min_pixels"])
        for key in ("do_rescale", "do_normalize"):
            if not isinstance(values.get(key, True), bool):
                raise bad(key, "true or false")
        rescale = values.get("rescale_factor", cls.rescale_factor)
        if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not rescale > 0:
            raise bad("rescale_factor", "a positive number")
        for key in ("image_mean", "image_std"):
            v = values.get(key, getattr(cls, key))
            v = [v] * 3 if isinstance(v, (int, float)) and not isinstance(v, bool) else v
            if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
                raise bad(key, "a list of 3 numbers (R, G, B)")
            if key == "image_std" and not all(x > 0 for x in v):
                raise bad(key, "3 positive numbers")
            values[key] = tuple(float(x) for x in v)
        values["rescale_factor"] = float(rescale)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The Hub layout, readable by :meth:`from_dict` and by transformers' ``Qwen2VLImageProcessor*``."""
        d = dataclasses.asdict(self)
        d.update(image_mean=list(self.image_mean), image_std=list(self.image_std), do_resize=True, do_convert_rgb=True,
                 size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels})
        return {"image_processor_type": IMAGE_PROCESSOR_TYPES[0], **d}


class QwenProcessor:
    """A Qwen2-VL / Qwen2.5-VL checkpoint's tokenizer, image processor and chat template (one image per prompt).

    ``image_hw=(H, W)`` (multiples of ``patch_size * merge_size``) resizes every image to exactly ``H x W``:
    ``(H / 28) * (W / 28)`` visual tokens whatever the input size. ``None`` keeps the checkpoint's ``smart_resize``.
    """

    def __init__(self, tokenizer: Any, image_config: QwenImageConfig, chat_template: str,
                 image_hw: tuple[int, int] | None = None, processor_class: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.image_config = image_config
        self.chat_template = chat_template
        self.processor_class = processor_class
        self.image_hw = _check_image_hw(image_hw, image_config.factor)
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
        self.image_token_id = _token_id(tokenizer, self.image_token)
        video_token = getattr(tokenizer, "video_token", None) or VIDEO_TOKEN
        self.video_token_id = _token_id(tokenizer, video_token) if video_token in tokenizer.get_vocab() else None
        if self.format_prompt("?").count(self.image_token) != 1:
            raise ArtifactError(f"The chat template does not place exactly one {self.image_token} for an image; topv needs "
                                "the Qwen2-VL chat template (the checkpoint's chat_template.jinja or chat_template.json).")

    # ------------------------------------------------------------------ pixels
    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H, W)`` in pixels that an image of ``height x width`` is resized to."""
        if self.image_hw is not None:
            return self.image_hw
        c = self.image_config
        return smart_resize(height, width, c.factor, c.min_pixels, c.max_pixels)

    def model_view(self, image: Any) -> np.ndarray:
        """The image as the vision tower sees it: ``(H, W, 3)`` uint8 at :meth:`target_size`."""
        from PIL import Image

        from topv.inputs import load_image

        pil = load_image(image)
        h, w = self.target_size(pil.height, pil.width)
        return np.array(pil.resize((w, h), resample=Image.Resampling(self.image_config.resample)), dtype=np.uint8)

    def pixels(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """``pixel_values`` float32 ``(grid_h * grid_w, C * T * P * P)`` and ``image_grid_thw`` int64 ``(1, 3)``."""
        c = self.image_config
        x: np.ndarray = self.model_view(image)
        if c.do_rescale:
            x = (x.astype(np.float64) * c.rescale_factor).astype(np.float32)
        if c.do_normalize:
            x = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
            x = (x - np.array(c.image_mean, dtype=x.dtype)) / np.array(c.image_std, dtype=x.dtype)
        x = np.asarray(x, dtype=np.float32).transpose(2, 0, 1)  # CHW
        channels, height, width = x.shape
        p, m, t = c.patch_size, c.merge_size, c.temporal_patch_size
        gh, gw = height // p, width // p
        x = x.reshape(channels, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
        x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], t, p, p))
        pixel_values = np.ascontiguousarray(x.reshape(gh * gw, channels * t * p * p), dtype=np.float32)
        return pixel_values, np.array([[1, gh, gw]], dtype=np.int64)

    # ------------------------------------------------------------------ text
    def format_prompt(self, prompt: str) -> str:
        """The chat template's text for a user turn of one image then ``prompt``, with the assistant's header.

        Raises:
            InputError: the prompt is empty, not a string, or contains image/video placeholder tokens.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"The prompt must be a non-empty string; got {prompt!r}.")
        found = [t for t in VISION_TOKENS if t in prompt]
        if found:
            raise InputError(f"The prompt contains {', '.join(found)}; topv inserts the image placeholder itself (one "
                             "image per prompt, no video). Ask the question in plain text.")
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        try:
            text = self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template,
                                                      add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja2 errors: the template is the checkpoint's, not the user's
            raise ArtifactError(f"The checkpoint's chat template failed to render ({type(exc).__name__}: {exc}); use the "
                                "Qwen2-VL chat template.") from None
        return str(text)

    def encode(self, image: Any, prompt: str) -> dict[str, np.ndarray]:
        """The model inputs for one image and one question, as ``Qwen2VLProcessor.apply_chat_template(...,
        add_generation_prompt=True, tokenize=True, return_dict=True)`` gives them: ``input_ids``,
        ``attention_mask``, ``mm_token_type_ids`` (int64 ``(1, S)``), ``pixel_values`` float32 and
        ``image_grid_thw`` int64 ``(1, 3)``."""
        text = self.format_prompt(prompt)
        pixel_values, grid_thw = self.pixels(image)
        count = int(np.prod(grid_thw[0])) // self.image_config.merge_size ** 2
        text = text.replace(self.image_token, self.image_token * count)
        bos = getattr(self.tokenizer, "bos_token", None)
        ids = self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
        input_ids = np.asarray([ids], dtype=np.int64)
        if int((input_ids == self.image_token_id).sum()) != count:
            raise ArtifactError(f"The tokenizer did not keep {self.image_token} as one token ({count} expected); the "
                                "checkpoint's tokenizer must list it as a special token.")
        types = np.zeros_like(input_ids)
        types[input_ids == self.image_token_id] = 1
        if self.video_token_id is not None:
            types[input_ids == self.video_token_id] = 2
        return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids), "mm_token_type_ids": types,
                "pixel_values": pixel_values, "image_grid_thw": grid_thw}

    # ------------------------------------------------------------------ files
    def save(self, folder: Path) -> None:
        """Write tokenizer files, ``chat_template.jinja`` and ``preprocessor_config.json`` (with the fixed size)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
        (folder / "chat_template.jinja").write_text(self.chat_template, encoding="utf-8")
        config = self.image_config.to_dict()
        if self.processor_class:
            config["processor_class"] = self.processor_class
        if self.image_hw is not None:
            config[FIXED_HW_KEY] = list(self.image_hw)
        (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _check_image_hw(image_hw: Any, factor: int) -> tuple[int, int] | None:
    """``image_hw`` as ``(H, W)``, both positive multiples of ``factor``, or None.

    Raises:
        ConfigError: anything else.
    """
    if image_hw is None:
        return None
    ok = isinstance(image_hw, (tuple, list)) and len(image_hw) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 and v % factor == 0 for v in image_hw)
    if not ok:
        raise ConfigError(f"The image size must be (height, width) in pixels, both positive multiples of {factor} "
                          f"(patch_size * merge_size); got {image_hw!r}. For example {(factor * 12, factor * 16)}.")
    return int(image_hw[0]), int(image_hw[1])


def _token_id(tokenizer: Any, token: str) -> int:
    """The id of a special token the tokenizer must have."""
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        raise ArtifactError(f"The tokenizer has no {token} token; a Qwen2-VL tokenizer has it. Pass the folder of a "
                            "Qwen2-VL or Qwen2.5-VL checkpoint.")
    return int(vocab[token])


def _read_json(path: Path) -> Any:
    from topv.artifact.files import read_json

    return read_json(path, missing=f"{path} is missing.", damaged="Re-save the processor from the original checkpoint.")


def _read_image_config(folder: Path) -> tuple[dict[str, Any], str, str | None]:
    """``(image-processor dict, its source, processor_class)`` from ``preprocessor_config.json`` or, as a transformers 5
    ``processor.save_pretrained`` writes it, ``processor_config.json["image_processor"]``."""
    for name, nested in (("preprocessor_config.json", False), ("processor_config.json", True)):
        path = folder / name
        if not path.is_file():
            continue
        data = _read_json(path)
        outer = data if isinstance(data, dict) else {}
        if nested:
            data = outer.get("image_processor")
        if not isinstance(data, dict):
            what = "an object with an 'image_processor' object" if nested else "an object"
            raise ArtifactError(f"{path} must hold {what}; found {type(data).__name__}. Re-save the processor from the "
                                "original checkpoint.")
        processor_class = data.get("processor_class") or outer.get("processor_class")
        return data, str(path), processor_class if isinstance(processor_class, str) else None
    raise ArtifactError(f"{str(folder)!r} has no image processor settings: expected preprocessor_config.json (or a "
                        "processor_config.json with an 'image_processor' entry). Pass a Qwen2-VL / Qwen2.5-VL checkpoint "
                        "folder as it was downloaded or saved with save_pretrained.")


def _pick_template(value: Any, source: Path) -> str:
    """A template string from a string, a ``{name: template}`` dict or a ``[{name, template}]`` list ("default")."""
    if isinstance(value, list):
        value = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
    if isinstance(value, dict):
        value = value.get("default")
    if not isinstance(value, str) or not value.strip():
        raise ArtifactError(f"{source}: the chat template must be a non-empty string (or a named 'default' one); found "
                            f"{type(value).__name__}. Re-save the processor from the original checkpoint.")
    return value


def _read_chat_template(folder: Path) -> str:
    """The chat template: ``chat_template.jinja``, else ``chat_template.json``, else ``tokenizer_config.json``."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            return _pick_template(jinja.read_text(encoding="utf-8"), jinja)
        except (OSError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{jinja} cannot be read ({exc}). Re-save the processor.") from None
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        data = _read_json(path) if path.is_file() else None
        if isinstance(data, dict) and data.get("chat_template") is not None:
            return _pick_template(data["chat_template"], path)
    raise ArtifactError(f"{str(folder)!r} has no chat template: expected chat_template.jinja, chat_template.json or a "
                        "'chat_template' in tokenizer_config.json. Copy the checkpoint's chat template files.")


def _load_tokenizer(folder: Path) -> Any:
    """The checkpoint's fast tokenizer (``AutoTokenizer``, local files only, no remote code)."""
    if not (folder / "tokenizer.json").is_file() and not (
            (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        raise ArtifactError(f"{str(folder)!r} has no tokenizer: expected tokenizer.json (or vocab.json and merges.txt). "
                            "Copy the checkpoint's tokenizer files.")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ArtifactError(f"Could not load the tokenizer from {str(folder)!r}: {exc}. Copy the checkpoint's "
                            "tokenizer files (tokenizer.json, tokenizer_config.json).") from None


def load_qwen_processor(folder: str | Path, image_hw: tuple[int, int] | None = None) -> QwenProcessor:
    """The processor of a Qwen2-VL / Qwen2.5-VL checkpoint folder (or of one :meth:`QwenProcessor.save` wrote).

    ``image_hw=None`` takes the fixed size the folder records, if any (an export's processor), else smart_resize.

    Raises:
        ArtifactError: files missing or malformed, or the folder asks to run code shipped with it.
        ConfigError: ``image_hw`` is not a pair of multiples of 28, or differs from the size the folder is fixed to.
    """
    from topv.families import refuse_remote_code

    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{str(folder)!r} is not a folder; pass a Qwen2-VL / Qwen2.5-VL checkpoint folder.")
    refuse_remote_code(folder)
    data, source, processor_class = _read_image_config(folder)
    config = QwenImageConfig.from_dict(data, source)
    saved = data.get(FIXED_HW_KEY)
    if saved is not None:
        try:
            saved = _check_image_hw(saved, config.factor)
        except ConfigError as exc:
            raise ArtifactError(f"{source}: {FIXED_HW_KEY} is malformed. {exc}") from None
        if image_hw is not None and tuple(image_hw) != saved:
            raise ConfigError(f"The processor in {str(folder)!r} is fixed to {saved[0]}x{saved[1]} pixels (an export's "
                              f"static visual tokens); got image size {image_hw!r}. Leave it out or pass {saved}.")
    return QwenProcessor(_load_tokenizer(folder), config, _read_chat_template(folder),
                         image_hw=image_hw if image_hw is not None else saved, processor_class=processor_class)
