"""--quantize int8: standard-domain int8 MatMuls, close to float32, runnable, and refused by topv-check."""

import json

import onnx
import pytest

from topv.errors import ConfigError
from topv.export.exporter import ExportOptions
from topv.testing.llava import LlavaShape

SHAPE = LlavaShape(num_kv_heads=2, image_size=84, initializer_range=0.2)


@pytest.fixture(scope="module")
def int8_export(exports):
    return exports.export("int8-6x6", SHAPE, keep=10, layer=2, quantize="int8")


def _ops(folder, manifest, name):
    model = onnx.load(str(folder / manifest["graphs"][name]["file"]), load_external_data=False)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    return {n.op_type for n in model.graph.node}


def test_int8_graphs_use_standard_int8_ops_and_stay_close(int8_export, scene_image):
    manifest = json.loads((int8_export / "manifest.json").read_text())
    assert manifest["quantization"]["weights"] == "int8" and manifest["quantization"]["kept_set"] == "float32"
    assert manifest["quantization"]["graphs"] == ["prefill_tail", "decode_step"]
    for name in ("prefill_tail", "decode_step"):
        assert {"MatMulInteger", "DynamicQuantizeLinear"} <= _ops(int8_export, manifest, name)
    for name in ("vision", "prefill_head", "prune"):  # they decide the kept tokens: float32 (topv.precision)
        assert "MatMulInteger" not in _ops(int8_export, manifest, name)
    report = json.loads((int8_export / "validation.json").read_text())
    assert report["ok"]  # the float32 graphs were validated exactly before quantization
    assert report["int8"]["ok"] and report["int8"]["min_logit_cosine"] >= 0.99
    assert report["int8"]["generation"]["kept_indices_equal"]
    from topv.runtime.pipeline import Pipeline

    result = Pipeline.load(int8_export).generate(scene_image, "w1 w2", max_new_tokens=6)
    assert len(result.token_ids) >= 1 and len(result.kept_indices) == 10


def test_int8_keeps_the_float32_kept_set_on_unseen_images(int8_export, exports):
    """Vision and layers 0..K stay float32, so the int8 export keeps exactly the float32 export's tokens."""
    import numpy as np

    from tests._helpers import assert_kept_decided
    from topv.runtime.pipeline import Pipeline
    from topv.export.validate import exported_scores

    float32 = Pipeline.load(exports.export("int8-6x6", SHAPE, keep=10, layer=2))
    int8 = Pipeline.load(int8_export)
    spec = float32.manifest.spec
    for seed in range(3):
        image = (np.random.RandomState(seed).rand(70, 90, 3) * 255).astype(np.uint8)
        inputs = float32.prepare_inputs(image, "w4 w5")
        assert_kept_decided(exported_scores(float32, inputs, spec.grid_hw, float32.manifest.pruning.config), 10,
                            float32.manifest.pruning.config, f"image {seed}")
        assert int8.generate(image, "w4 w5", max_new_tokens=1).kept_indices == \
            float32.generate(image, "w4 w5", max_new_tokens=1).kept_indices


def test_kept_set_follow_quantizes_vision_and_head_and_reports_the_kept_set(exports):
    out = exports.export("int8-6x6", SHAPE, keep=10, layer=2, quantize="int8", kept_set="follow")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["kept_set"] == "follow"
    assert manifest["quantization"]["graphs"] == ["vision", "prefill_head", "prefill_tail", "decode_step"]
    for name in manifest["quantization"]["graphs"]:
        assert {"MatMulInteger", "DynamicQuantizeLinear"} <= _ops(out, manifest, name)
    assert "MatMulInteger" not in _ops(out, manifest, "prune")
    report = json.loads((out / "validation.json").read_text())
    assert isinstance(report["int8"]["generation"]["kept_indices_equal"], bool)  # measured and reported, not required
    assert any("int8 kept indices" in line for line in report["int8"]["lines"])


def test_int8_folder_is_reported_unbuildable_by_topv_check(int8_export):
    from topv.engines.check import check_folder

    report = check_folder(int8_export)
    assert not report.ok
    assert any("MatMulInteger" in f.message for g in report.graphs for f in g.findings)


def test_int8_needs_fp32():
    with pytest.raises(ConfigError, match="applies to fp32 exports"):
        ExportOptions(quantize="int8", dtype="fp16")
    with pytest.raises(ConfigError, match="None or 'int8'"):
        ExportOptions(quantize="int4")
