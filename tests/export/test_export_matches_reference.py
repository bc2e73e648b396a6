"""topv-export + topv-run against transformers (no pruning) and the PyTorch reference (pruning)."""

import json

import numpy as np
import pytest

import topv
from tests._helpers import assert_decided, assert_tokens_decided, hf_inputs, reference_trace
from topv.export.cli import main as export_main
from topv.testing.llava import EOS_ID, LlavaShape
from topv.runtime.cli import main as run_main

MODELS = {
    "gqa-default-6x6": LlavaShape(num_kv_heads=2, image_size=84, initializer_range=0.2),
    "mha-full-4x4": LlavaShape(vision_feature_select_strategy="full", initializer_range=0.2),
    "gqa-default-8x8-p8": LlavaShape(num_layers=5, num_heads=8, num_kv_heads=2, image_size=64, patch_size=8, initializer_range=0.2),
    # The realistic model's family: DINOv2 tower, grouped-query Llama with tied embeddings.
    "dinov2-gqa-tied-4x4": LlavaShape(vision_model_type="dinov2", vision_feature_layer=-1, image_size=56, patch_size=14,
                                      hidden_size=96, num_heads=6, num_kv_heads=2, tie_word_embeddings=True,
                                      initializer_range=0.2),
    "siglip-mistral-4x4": LlavaShape(vision_model_type="siglip_vision_model", vision_feature_select_strategy="full",
                                       text_model_type="mistral", num_kv_heads=2, initializer_range=0.2),
    "clip-qwen2-gqa-4x4": LlavaShape(text_model_type="qwen2", num_kv_heads=2, initializer_range=0.2),
}
PROMPT = "w3 w14 w15 w9 w26"
# A prompt whose reference generation has a near-tie (a top-1/top-2 logit margin of 2.8e-5 at step 14 for the DINOv2
# model pruned to 6 at layer 2) cannot be compared token for token across kernels; that case asks another question.
PRUNED_PROMPTS = {"dinov2-gqa-tied-4x4": "w1 w2"}


def _run_json(out_dir, image, capsys, prompt=PROMPT, n=32):
    assert run_main([str(out_dir), "--image", str(image), "--prompt", prompt, "--max-new-tokens", str(n), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def image_file(tmp_path_factory, scene_image):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    scene_image.save(path)
    return path


@pytest.mark.parametrize("name", list(MODELS))
def test_keep_all_equals_transformers_generate(name, exports, image_file, capsys):
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration


    model_dir = exports.model_dir(name, MODELS[name])
    out = exports.root / f"cli-{name}"
    assert export_main([str(model_dir), str(out), "--keep", "all", "--max-new-tokens", "32", "-q"]) == 0
    capsys.readouterr()
    got = _run_json(out, image_file, capsys)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    inputs = hf_inputs(processor, image_file, PROMPT)
    with torch.no_grad():
        gen = model.generate(**inputs, max_new_tokens=32, do_sample=False, return_dict_in_generate=True, output_logits=True)
    assert_tokens_decided([row[0].float().numpy() for row in gen.logits], name)  # exact tokens need decided steps
    want = gen.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    assert len(want) == 32 or want[-1] == EOS_ID
    assert got["token_ids"] == want
    assert got["kept_indices"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pruning"]["enabled"] is False and "prune" not in manifest["graphs"]


@pytest.mark.parametrize("name,keep,layer", [("gqa-default-6x6", 10, 2), ("mha-full-4x4", 5, 1), ("gqa-default-8x8-p8", 20, 0),
                                             ("dinov2-gqa-tied-4x4", 6, 2), ("siglip-mistral-4x4", 6, 1),
                                             ("clip-qwen2-gqa-4x4", 6, 2)])
def test_pruned_equals_reference(name, keep, layer, exports, image_file, capsys):
    out = exports.export(name, MODELS[name], keep=keep, layer=layer)
    prompt = PRUNED_PROMPTS.get(name, PROMPT)
    got = _run_json(out, image_file, capsys, prompt)
    model_dir = str(exports.model_dir(name, MODELS[name]))
    want = topv.generate(model_dir, None, image_file, prompt, keep=keep, layer=layer, max_new_tokens=32)
    # Kept set and tokens decided by the model, not by float32 rounding (siglip-mistral failed here on an AMX Xeon
    # before TopV ranked its well-conditioned key).
    assert_decided(reference_trace(model_dir, image_file, prompt, keep=keep, layer=layer), keep, what=name)
    assert got["kept_indices"] == want.kept_indices
    assert got["token_ids"] == want.token_ids
    shape = MODELS[name]
    extra = 1 if shape.vision_feature_select_strategy == "full" and shape.vision_model_type != "siglip_vision_model" else 0
    assert len(got["kept_indices"]) == keep + extra


def test_static_kv_buffers_after_k_are_sized_for_the_kept_length(exports):
    from topv.runtime.pipeline import Pipeline

    keep, layer = 10, 1
    out = exports.export("gqa-default-6x6", MODELS["gqa-default-6x6"], keep=keep, layer=layer, max_prompt_tokens=60,
                         max_new_tokens=16)
    manifest = json.loads((out / "manifest.json").read_text())
    kv = manifest["kv_cache"]
    n = 36
    assert kv["capacity_head"] == 60 + 16
    assert kv["capacity_tail"] == 60 - n + keep + 16
    assert kv["bytes"] * 76 * 4 == kv["bytes_unpruned"] * (2 * 76 + 2 * 50)
    pipe = Pipeline.load(out)
    assert [pipe.manifest.kv.capacity(i) for i in range(4)] == [76, 76, 50, 50]
    shapes = pipe.backend.input_shapes("decode_step")
    for i in range(4):
        capacity = 76 if i <= layer else 50
        assert shapes[f"past_key.{i}"] == [1, 2, capacity, 16]
        assert shapes[f"past_value.{i}"] == [1, 2, capacity, 16]
    # The preallocated host buffers are exactly those.
    state = pipe._states.get()
    try:
        assert [k.shape[2] for k in state.cache.keys] == [76, 76, 50, 50]
    finally:
        pipe._states.put(state)


def test_graphs_are_standard_onnx_with_shape_inference(exports):
    import onnx

    out = exports.export("gqa-default-6x6", MODELS["gqa-default-6x6"], keep=10, layer=2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"vision", "prefill_head", "prune", "prefill_tail", "decode_step"}
    for entry in manifest["graphs"].values():
        path = out / entry["file"]
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    prune = onnx.load(str(out / "prune.onnx"), load_external_data=False)
    ops = [n.op_type for n in prune.graph.node]
    # The solve (log-sum-exp half-steps), the key's masked diagonal, and the selection: TopK for the k-th value and the
    # distinct keys, twice more for the recovery and the ascending order. Ranked on the key, so no Softmax.
    assert {"ReduceMax", "Exp", "ReduceSum", "Log", "Where", "ReduceMin", "Gather"} <= set(ops)
    assert ops.count("TopK") == 4 and "Softmax" not in ops
    from onnx import numpy_helper

    constants = [numpy_helper.to_array(a.t) for node in prune.graph.node for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    constants += [numpy_helper.to_array(t) for t in prune.graph.initializer]
    assert all(np.isfinite(c).all() for c in constants if c.dtype.kind == "f")  # no -inf mask for fp16 to meet
    # Every file is checksummed, weights are shared.
    assert set(manifest["files"]) >= {"weights.bin", "validation.json", "processor/processor_config.json"}
    assert manifest["weights"]["stored_bytes"] < manifest["weights"]["initializer_bytes"]
    report = json.loads((out / "validation.json").read_text())
    assert report["ok"] and report["generation"]["tokens_equal"] and report["generation"]["kept_indices_equal"]
