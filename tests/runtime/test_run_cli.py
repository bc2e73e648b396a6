"""topv-run: streamed answer, --json, kept-token map, and one-line errors with exit status 2."""

import json

import numpy as np
import pytest
from PIL import Image

from topv.testing.llava import LlavaShape
from topv.runtime.cli import main as run_main

SHAPE = LlavaShape(num_kv_heads=2, image_size=84, initializer_range=0.2)


@pytest.fixture(scope="module")
def folder(exports):
    return exports.export("cli-6x6", SHAPE, keep=9, layer=1, max_new_tokens=12)


@pytest.fixture(scope="module")
def image(tmp_path_factory, scene_image):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    scene_image.save(path)
    return path


def test_streamed_text_equals_json_text(folder, image, capsys):
    assert run_main([str(folder), "--image", str(image), "--prompt", "w1 w2", "--max-new-tokens", "8"]) == 0
    streamed = capsys.readouterr().out.rstrip("\n")
    assert run_main([str(folder), "--image", str(image), "--prompt", "w1 w2", "--max-new-tokens", "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["text"] == streamed
    assert set(data) >= {"text", "token_ids", "kept_indices", "timings_ms"}
    assert len(data["kept_indices"]) == 9 and len(data["timings_ms"]["decode"]) == len(data["token_ids"]) - 1


def test_kept_map_highlights_the_kept_patches(folder, image, tmp_path, capsys):
    png = tmp_path / "map.png"
    assert run_main([str(folder), "--image", str(image), "--prompt", "w1", "--max-new-tokens", "2", "--json",
                     "--save-kept-map", str(png)]) == 0
    kept = json.loads(capsys.readouterr().out)["kept_indices"]
    img = np.asarray(Image.open(png).convert("RGB")).astype(float)
    side = img.shape[0] // 6
    brightness = [img[r * side + 2:(r + 1) * side - 2, c * side + 2:(c + 1) * side - 2].mean() for r in range(6) for c in range(6)]
    kept_mean = np.mean([brightness[i] for i in kept])
    pruned_mean = np.mean([b for i, b in enumerate(brightness) if i not in kept])
    assert kept_mean > 2 * pruned_mean  # pruned patches are dimmed to a quarter


def test_errors_are_one_line_with_status_2(folder, tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    assert run_main([str(folder), "--image", str(bad), "--prompt", "w1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an image" in err and "Traceback" not in err
    assert run_main([str(tmp_path), "--image", str(bad), "--prompt", "w1"]) == 2
    assert "no manifest.json" in capsys.readouterr().err
