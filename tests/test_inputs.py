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


def _exif_rotated(upright, tmp_path, suffix=".png"):
    """The image as a phone stores it: pixels turned on their side, EXIF orientation 6 says how to show them."""
    from PIL import Image

    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / f"phone{suffix}"
    stored.save(path, exif=exif)
    return path


def test_exif_orientation_is_applied(scene_image, tmp_path):
    loaded = load_image(_exif_rotated(scene_image, tmp_path))
    assert loaded.size == scene_image.size
    assert np.array_equal(np.asarray(loaded), np.asarray(scene_image.convert("RGB")))


def test_exif_orientation_reaches_the_reference_and_the_runtime(exports, scene_image, tmp_path):
    import topv
    from topv.runtime.pipeline import Pipeline
    from topv.testing.llava import LlavaShape

    upright = tmp_path / "upright.png"
    scene_image.save(upright)
    phone = _exif_rotated(scene_image, tmp_path)
    shape = LlavaShape(initializer_range=0.2)
    pipe = Pipeline.load(exports.export("exif-4x4", shape, keep=4, validate_tokens=2))
    assert pipe.generate(phone, "w1 w2", max_new_tokens=8).token_ids == pipe.generate(upright, "w1 w2", max_new_tokens=8).token_ids
    model_dir = str(exports.model_dir("exif-4x4", shape))
    a = topv.generate(model_dir, None, phone, "w1 w2", keep=4, max_new_tokens=8)
    b = topv.generate(model_dir, None, upright, "w1 w2", keep=4, max_new_tokens=8)
    assert a.token_ids == b.token_ids and a.kept_indices == b.kept_indices


@pytest.mark.parametrize("side", [14000, 10000])
def test_oversized_images_are_typed_errors(tmp_path, side):
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(path)  # a small file that decodes to side x side pixels
    with pytest.raises(ImageError, match="megapixels|too large"):
        load_image(path)


def test_degenerate_inputs(tmp_path, caplog):
    import logging

    with pytest.raises(ImageError, match="at least one pixel"):
        load_image(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)
    with caplog.at_level(logging.WARNING, logger="topv"):
        assert load_image(np.zeros((1, 1, 3), np.uint8)).size == (1, 1)
    assert "only 1x1 pixels" in caplog.text


def test_the_image_placeholder_in_a_prompt_is_refused(tiny_llava):
    with pytest.raises(InputError, match="image placeholder"):
        LlavaProcessor(tiny_llava[1]).format_prompt("look at <image> please")
