"""The Polygraphy helper: real per-graph inputs from one ONNX Runtime request, and the commands that use them."""

import numpy as np

from topv.artifact.manifest import read_manifest

from topv.runtime.backends.trt.polygraphy import graph_inputs, polygraphy_commands


def test_inputs_follow_the_manifest_and_the_commands_use_the_profiles(pruned_export, scene_image, tmp_path):
    manifest = read_manifest(pruned_export)
    feeds = graph_inputs(pruned_export, scene_image, "What colour is the square?")
    assert list(feeds) == list(manifest.graphs)
    for graph, feed in feeds.items():
        entry = manifest.graphs[graph]
        assert list(feed) == entry.input_names
        for spec in entry.inputs:
            value = feed[spec.name]
            assert value.dtype == np.dtype(spec.dtype)
            assert all(d == s for d, s in zip(value.shape, spec.shape) if isinstance(s, int))
    decode = feeds["decode_step"]
    assert decode["past_length_head"][0] == feeds["prefill_head"]["input_ids"].shape[1]
    assert decode["past_length_tail"][0] == feeds["prefill_tail"]["position_ids"].shape[1]
    paths = {g: tmp_path / f"{g}.inputs.json" for g in feeds}
    commands = polygraphy_commands(pruned_export, manifest, paths, "fp16")
    assert len(commands) == 3 * len(feeds)
    head = next(c for c in commands if "prefill_head.onnx --onnxrt --trt" in c)
    p_max = manifest.shapes.max_prompt_tokens
    assert f"'input_ids:[1,{p_max}]'" in head and "--load-inputs" in head
    tail = next(c for c in commands if "prefill_tail.onnx --onnxrt --trt" in c)
    assert "--fp16" in tail and "--atol 0.02" in tail
    for graph in ("vision", "prefill_head", "prune"):  # they decide the kept tokens: built, and compared, in float32
        command = next(c for c in commands if f"{graph}.onnx --onnxrt --trt" in c)
        assert "--fp16" not in command and "--atol 0.001 --rtol 0.001" in command
    assert any("decode_step.engine --model-type engine --trt" in c and "--load-outputs" in c for c in commands)
