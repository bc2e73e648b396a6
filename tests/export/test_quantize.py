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


def test_int8_graphs_use_standard_int8_ops_and_stay_close(int8_export, scene_image):
    manifest = json.loads((int8_export / "manifest.json").read_text())
    assert manifest["quantization"]["weights"] == "int8"
    for name in ("vision", "prefill_head", "prefill_tail", "decode_step"):
        model = onnx.load(str(int8_export / manifest["graphs"][name]["file"]), load_external_data=False)
        ops = {n.op_type for n in model.graph.node}
        assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    report = json.loads((int8_export / "validation.json").read_text())
    assert report["ok"]  # the float32 graphs were validated exactly before quantization
    assert report["int8"]["ok"] and report["int8"]["min_logit_cosine"] >= 0.99
    from topv.runtime.pipeline import Pipeline

    result = Pipeline.load(int8_export).generate(scene_image, "w1 w2", max_new_tokens=6)
    assert len(result.token_ids) >= 1 and len(result.kept_indices) == 10


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
