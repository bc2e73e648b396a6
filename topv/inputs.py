"""Turning a user's image and prompt into model inputs, exactly as Hugging Face LLaVA expects.

Shared by the PyTorch reference (``topv.generate``) and every runtime backend, so that all of them see
the same token ids and pixels. Imports PIL and transformers' processor lazily.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from topv.errors import ImageError, InputError


def load_image(image: Any) -> Any:
    """Return an RGB ``PIL.Image`` from a path, a PIL image, or an ``(H, W, 3)`` uint8 array.

    Raises:
        ImageError: the file is missing, is not an image, or is truncated/corrupt.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"Image file {str(path)!r} does not exist; pass the path of a PNG or JPEG image.")
        try:
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
        except UnidentifiedImageError as exc:
            raise ImageError(
                f"{str(path)!r} is not an image PIL can read (expected PNG, JPEG, ...); pass an image file."
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"Image file {str(path)!r} is truncated or corrupt ({exc}); re-save or re-download it.") from exc
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        np = None
    if np is not None and isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ImageError(
                f"An image array must be (H, W, 3) or (H, W, 4) uint8; got shape {image.shape} dtype {image.dtype}."
            )
        return Image.fromarray(image).convert("RGB")
    raise ImageError(f"Expected an image path, a PIL image or a uint8 array; got {type(image).__name__}.")


def format_prompt(processor: Any, prompt: str) -> str:
    """The text LLaVA checkpoints expect for one image followed by ``prompt``.

    Uses the processor's chat template when it has one, else ``"<image>\\n" + prompt``.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"The prompt must be a non-empty string; got {prompt!r}.")
    if getattr(processor, "chat_template", None):
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True)
    image_token = getattr(processor, "image_token", None) or "<image>"
    return f"{image_token}\n{prompt}"


def encode(processor: Any, image: Any, prompt: str, return_tensors: str = "pt") -> dict[str, Any]:
    """``input_ids`` and ``pixel_values`` for one image and one prompt, via the model's own processor."""
    text = format_prompt(processor, prompt)
    pil = load_image(image)
    return dict(processor(images=pil, text=text, return_tensors=return_tensors))


def image_span(input_ids: Any, image_token_id: int, expected: int) -> int:
    """Offset of the contiguous run of ``expected`` image tokens in a 1-D sequence of ids.

    Raises:
        InputError: the image tokens are missing, not contiguous, or not ``expected`` in number.
    """
    ids = [int(x) for x in input_ids]
    positions = [i for i, t in enumerate(ids) if t == image_token_id]
    if len(positions) != expected or (positions and positions[-1] - positions[0] + 1 != expected):
        raise InputError(
            f"Expected one image: {expected} contiguous image tokens (id {image_token_id}) in the prompt; "
            f"found {len(positions)}. Put exactly one image in the prompt and do not type the image token yourself."
        )
    return positions[0]
