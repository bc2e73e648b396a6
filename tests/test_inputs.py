"""Images and prompts: clear typed errors for bad input."""

import numpy as np
import pytest

from topv.errors import ImageError, InputError
from topv.families.llava import LlavaProcessor
from topv.inputs import image_span, load_image


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is text, not pixels")
    with pytest.raises(ImageError, match="not an image"):
        load_image(p)


def test_truncated_image(tmp_path, scene_image):
    p = tmp_path / "scene.png"
    scene_image.save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(p)


def test_arrays_and_pil(scene_image):
    arr = np.asarray(scene_image)
    assert load_image(arr).size == scene_image.size
    assert load_image(scene_image.convert("L")).mode == "RGB"
    with pytest.raises(ImageError, match="uint8"):
        load_image(arr.astype(np.float32))
    with pytest.raises(ImageError, match="Expected an image path"):
        load_image(12)


def test_prompt_must_be_text(tiny_llava):
    _, processor = tiny_llava
    with pytest.raises(InputError, match="non-empty string"):
        LlavaProcessor(processor).format_prompt("   ")
    assert LlavaProcessor(processor).format_prompt("w1").endswith("ASSISTANT:")


def test_image_span():
    assert image_span([1, 5, 4, 4, 4, 7], 4, 3) == 2
    with pytest.raises(InputError, match="found 2"):
        image_span([1, 4, 4, 7], 4, 3)
    with pytest.raises(InputError, match="contiguous"):
        image_span([4, 4, 1, 4], 4, 3)
