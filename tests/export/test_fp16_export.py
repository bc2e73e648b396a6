"""fp16 exports keep norms, softmax and the TopV solve in float32 and still match the reference."""

import json

import onnx
import pytest
from onnx import TensorProto, shape_inference

from topv.testing.llava import LlavaShape

SHAPE = LlavaShape(num_kv_heads=2, image_size=84, initializer_range=0.2)
FP32_OPS = {"Softmax", "ReduceMean", "LayerNormalization", "ReduceSum", "ReduceMax", "ReduceMin", "Exp", "Log"}


@pytest.fixture(scope="module")
def fp16_export(exports):
    return exports.export("fp16-6x6", SHAPE, keep=10, layer=1, dtype="fp16")


def _input_types(path):
    model = shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return model, types


def test_reductions_run_in_float32(fp16_export):
    manifest = json.loads((fp16_export / "manifest.json").read_text())
    seen = set()
    for entry in manifest["graphs"].values():
        model, types = _input_types(fp16_export / entry["file"])
        for node in model.graph.node:
            if node.op_type in FP32_OPS:
                seen.add(node.op_type)
                assert types[node.input[0]] == TensorProto.FLOAT, (entry["file"], node.op_type, node.name)
    assert {"Softmax", "ReduceMean", "LayerNormalization"} <= seen


def test_weights_and_cache_are_half(fp16_export):
    manifest = json.loads((fp16_export / "manifest.json").read_text())
    assert manifest["kv_cache"]["dtype"] == "float16"
    decode = {t["name"]: t["dtype"] for t in manifest["graphs"]["decode_step"]["inputs"]}
    assert decode["past_key.0"] == "float16"
    outputs = {t["name"]: t["dtype"] for t in manifest["graphs"]["decode_step"]["outputs"]}
    assert outputs["logits"] == "float32"  # the sampler gets float32 logits
    model = onnx.load(str(fp16_export / "prefill_tail.onnx"), load_external_data=False)
    big = [t for t in model.graph.initializer if t.dims and max(t.dims) >= 64]
    assert big and all(t.data_type == TensorProto.FLOAT16 for t in big)


def test_fp16_export_validates_against_the_fp16_reference(fp16_export):
    report = json.loads((fp16_export / "validation.json").read_text())
    assert report["ok"] and report["dtype"] == "fp16"
    assert report["generation"]["tokens_equal"] and report["generation"]["kept_indices_equal"]
