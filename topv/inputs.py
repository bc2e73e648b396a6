"""Reading a user's image, and finding the image in a prompt's token ids.

Shared by the PyTorch reference and every runtime backend, so that all of them see the same pixels.
The family's processor (``topv.families``) turns the image and the question into model inputs.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from topv.errors import ImageError, InputError

log = logging.getLogger("topv")

#: Largest image topv decodes (PIL's own decompression-bomb limit, about 89 megapixels).
MAX_PIXELS = 89_478_485
#: Images smaller than this on either side are accepted with a warning (they are upscaled to nothing useful).
MIN_SIDE = 8


def _from_file(path: Path) -> Any:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise ImageError(f"Image file {str(path)!r} does not exist; pass the path of a PNG or JPEG image.")
    if not path.is_file():
        raise ImageError(f"{str(path)!r} is a {'folder' if path.is_dir() else 'special file'}, not an image file; pass a PNG or JPEG file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(
                        f"{str(path)!r} is {img.width}x{img.height} ({img.width * img.height / 1e6:.0f} megapixels); topv reads "
                        f"images of at most {MAX_PIXELS / 1e6:.0f} megapixels. Downscale it first (the model sees a few hundred "
                        "pixels per side anyway)."
                    )
                img.load()
                # Phone photos store their orientation in EXIF: apply it, as viewers do.
                return ImageOps.exif_transpose(img).convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{str(path)!r} is too large to decode safely ({exc}); downscale it first.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{str(path)!r} is not an image PIL can read (expected PNG, JPEG, ...); pass an image file.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"Image file {str(path)!r} is truncated or corrupt ({exc}); re-save or re-download it.") from None


def _from_array(image: Any) -> Any:
    import numpy as np
    from PIL import Image

    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ImageError(f"An image array must be (H, W, 3) or (H, W, 4) uint8; got shape {image.shape} dtype {image.dtype}.")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"An image array must have at least one pixel; got shape {image.shape}.")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"An image array of {image.shape[0]}x{image.shape[1]} pixels is above topv's {MAX_PIXELS / 1e6:.0f}-megapixel limit; downscale it.")
    return Image.fromarray(image).convert("RGB")


def load_image(image: Any) -> Any:
    """An RGB ``PIL.Image`` from a path, a PIL image, or an ``(H, W, 3)`` uint8 array (EXIF orientation applied).

    Raises:
        ImageError: the file is missing, a folder, not an image, truncated, or too large; the array is malformed.
    """
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ImageError(f"The image is {image.width}x{image.height}; it has no pixels.")
        pil = image.convert("RGB")
    elif isinstance(image, (str, os.PathLike)):
        pil = _from_file(Path(image))
    elif isinstance(image, np.ndarray):
        pil = _from_array(image)
    else:
        raise ImageError(f"Expected an image path, a PIL image or a uint8 array; got {type(image).__name__}.")
    if min(pil.size) < MIN_SIDE:
        log.warning("the image is only %dx%d pixels; it is upscaled for the vision tower and the answer may be meaningless",
                    pil.width, pil.height)
    return pil


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
