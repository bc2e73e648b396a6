"""Qwen2-VL / Qwen2.5-VL exports at a fixed image size: topv-export + topv-run equal transformers (pruning off) and
the reference (pruning on, same kept indices); the KV cache after layer K shrinks by the keep ratio; topv-check
passes; unsupported requests are typed errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import topv
from tests._helpers import assert_decided, assert_tokens_decided, reference_trace
from topv.engines.check import check_folder
from topv.export.cli import main as export_main
from topv.runtime.cli import main as run_main
from topv.runtime.pipeline import Pipeline
from topv.testing.qwen import SHAPES

MODELS = {
    "qwen2-vl": SHAPES["tiny-qwen2-vl"].replace(initializer_range=0.1),
    "qwen2.5-vl": SHAPES["tiny-qwen2.5-vl"].replace(initializer_range=0.1),
}
SIZE = "112x168"  # a 4 x 6 token grid
PROMPT = "w3 w14 w15 w9 w26"
# The pruned comparison asks another question: PROMPT's reference generation on the pruned Qwen2-VL has a near-tie
# (top-1/top-2 logit margin 1.5e-4 at step 23) that float32 rounding on another CPU could decide.
PRUNED_PROMPT = "What color is the shape?"


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    rng = np.random.RandomState(1)
    arr = (rng.rand(90, 130, 3) * 255).astype(np.uint8)
    arr[20:60, 40:90] = [30, 200, 60]
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(arr).save(path)
    return path


def _run_json(out_dir, image, capsys, n=32, prompt=PROMPT):
    assert run_main([str(out_dir), "--image", str(image), "--prompt", prompt, "--max-new-tokens", str(n), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _export(exports, name, capsys, *args):
    model_dir = exports.model_dir(name, MODELS[name])
    out = exports.root / f"qwen-{name}-{abs(hash(args))}"
    if not out.exists():
        assert export_main([str(model_dir), str(out), "--image-size", SIZE, "-q", *args]) == 0
        capsys.readouterr()
    return model_dir, out


@pytest.mark.parametrize("name", list(MODELS))
def test_keep_all_equals_transformers_generate(name, exports, image_file, capsys):
    model_dir, out = _export(exports, name, capsys, "--keep", "all")
    got = _run_json(out, image_file, capsys)
    pipe = Pipeline.load(out)
    model = topv.load_model(model_dir)[0]
    enc = pipe.processor.encode(image_file, PROMPT)  # the export's fixed-size preprocessing
    assert tuple(enc["image_grid_thw"][0]) == (1, 8, 12)
    with torch.no_grad():
        gen = model.generate(**{k: torch.from_numpy(v) for k, v in enc.items()}, max_new_tokens=32, do_sample=False,
                             repetition_penalty=1.0, return_dict_in_generate=True, output_logits=True)
    assert_tokens_decided([row[0].float().numpy() for row in gen.logits], name)  # exact tokens need decided steps
    want = gen.sequences[0, enc["input_ids"].shape[1]:].tolist()
    assert got["token_ids"] == want and got["kept_indices"] is None


@pytest.mark.parametrize("name", list(MODELS))
def test_pruned_equals_reference_and_the_cache_shrinks(name, exports, image_file, capsys):
    model_dir, out = _export(exports, name, capsys, "--keep", "6", "--layer", "1")  # TopV's defaults
    got = _run_json(out, image_file, capsys, prompt=PRUNED_PROMPT)
    pipe = Pipeline.load(out)
    want = topv.generate(str(model_dir), pipe.processor, image_file, PRUNED_PROMPT, keep=6, layer=1, max_new_tokens=32)
    assert_decided(reference_trace(str(model_dir), image_file, PRUNED_PROMPT, keep=6, layer=1, processor=pipe.processor), 6,
                   what=name)
    assert got["kept_indices"] == want.kept_indices and len(got["kept_indices"]) == 6
    assert got["token_ids"] == want.token_ids
    manifest = json.loads((out / "manifest.json").read_text())
    kv, shapes = manifest["kv_cache"], manifest["static_shapes"]
    assert manifest["model"]["spec"]["grid_hw"] == [4, 6] and manifest["model"]["spec"]["position_dims"] == 3
    assert kv["capacity_head"] - kv["capacity_tail"] == 24 - 6  # layers after K hold 6 of the 24 visual tokens
    assert kv["capacity_tail"] == shapes["max_prompt_tokens"] - 24 + 6 + shapes["max_new_tokens"]
    inputs = {t["name"]: t["shape"] for t in manifest["graphs"]["decode_step"]["inputs"]}
    assert inputs["past_key.1"][2] == kv["capacity_head"] and inputs["past_key.2"][2] == kv["capacity_tail"]
    assert pipe.backend.input_shapes("decode_step")["past_key.3"][2] == kv["capacity_tail"]
    assert check_folder(out).ok


def test_kept_map_on_the_merged_grid(exports, image_file, tmp_path, capsys):
    _, out = _export(exports, "qwen2.5-vl", capsys, "--keep", "6", "--layer", "1")
    png = tmp_path / "map.png"
    assert run_main([str(out), "--image", str(image_file), "--prompt", PROMPT, "--max-new-tokens", "2",
                     "--save-kept-map", str(png)]) == 0
    assert Image.open(png).size[0] * 4 == Image.open(png).size[1] * 6  # the 112 x 168 view, scaled


def test_torch_backend_matches(exports, image_file, capsys):
    model_dir, out = _export(exports, "qwen2-vl", capsys, "--keep", "6", "--layer", "1")
    a = Pipeline.load(out).generate(image_file, PROMPT, max_new_tokens=8)
    assert_decided(reference_trace(str(model_dir), image_file, PROMPT, keep=6, layer=1, steps=8,
                                   processor=Pipeline.load(out).processor), 6)  # torch and ONNX Runtime kernels differ
    b = Pipeline.load(out, "torch").generate(image_file, PROMPT, max_new_tokens=8)
    assert a.token_ids == b.token_ids and a.kept_indices == b.kept_indices


@pytest.mark.parametrize("size,text", [("100x168", "in multiples of 28 pixels (patch 14 x merge 2); got (100, 168)"),
                                       ("0x28", "expected HxW with two positive numbers of pixels; got '0x28'"),
                                       ("abc", "expected HxW in pixels, e.g. 448x644; got 'abc'")])
def test_image_sizes_off_the_28_pixel_grid_are_refused(exports, tmp_path, capsys, size, text):
    model_dir = exports.model_dir("qwen2-vl", MODELS["qwen2-vl"])
    try:
        code = export_main([str(model_dir), str(tmp_path / "o"), "--image-size", size, "-q"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and text in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("prompt,tokens", [("<|video_pad|> what happens?", "<|video_pad|>"),
                                           ("<|image_pad|> and <|vision_start|> twice", "<|vision_start|>, <|image_pad|>")])
def test_video_and_second_images_are_refused(exports, image_file, capsys, prompt, tokens):
    _, out = _export(exports, "qwen2-vl", capsys, "--keep", "all")
    assert run_main([str(out), "--image", str(image_file), "--prompt", prompt]) == 2
    err = capsys.readouterr().err
    assert f"The prompt contains {tokens}; topv inserts the image placeholder itself (one image per prompt, no video)" in err
    assert "Traceback" not in err


def test_topv_eval_runs_every_method_on_qwen(exports, image_file, tmp_path, capsys):
    from topv.evaluation.cli import main as eval_main

    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"image": str(image_file), "question": q, "answer": "w1"}) + "\n"
                            for q in ("w3 w14", "w9 w26 w2")))
    model_dir = exports.model_dir("qwen2.5-vl", MODELS["qwen2.5-vl"])
    assert eval_main([str(model_dir), "--data", str(data), "--keep", "8,4", "--max-new-tokens", "2",
                      "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert {(r["method"], r["keep"]) for r in result["results"]} >= {("topv", 8), ("fastv", 4), ("random", 4), ("uniform", 8),
                                                                     ("none", None)}
    assert all(r["n"] == 2 for r in result["results"])
