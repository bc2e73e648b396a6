"""On a machine with TensorRT and an NVIDIA GPU: build the tiny exports and compare with ONNX Runtime.

Skipped elsewhere (TensorRT cannot be installed on the machines this project's CI uses). The engines are
built in fp32 (TF32 off) so the comparison with ONNX Runtime's CPU results can use tight tolerances.
"""

import json

import numpy as np
import pytest

from tests._helpers import assert_export_decided

pytestmark = pytest.mark.tensorrt
PROMPT = "What colour is the square?"


def _require_tensorrt():
    try:
        import tensorrt
    except ImportError:
        pytest.skip("needs the tensorrt Python package (>= 10): pip install tensorrt --extra-index-url https://pypi.nvidia.com")
    if getattr(tensorrt, "TOPV_STANDIN", False):
        pytest.skip("tensorrt is the test stand-in")
    if int(tensorrt.__version__.split(".")[0]) < 10:
        pytest.skip(f"needs TensorRT >= 10, found {tensorrt.__version__}")
    try:
        import torch
    except ImportError:
        pytest.skip("needs torch with CUDA for the trt backend's device buffers")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU visible to torch")


@pytest.mark.parametrize("which", ["pruned_export", "unpruned_export"])
@pytest.mark.parametrize("cuda_graph", [True, False])
def test_real_tensorrt_matches_onnx_runtime(request, copy_export, scene_image, which, cuda_graph):
    _require_tensorrt()
    from topv.artifact.manifest import read_manifest
    from topv.engines.build import BuildOptions, build_engines
    from topv.runtime.pipeline import Pipeline

    folder = copy_export(request.getfixturevalue(which))
    manifest = read_manifest(folder)
    result = build_engines(folder, BuildOptions(precision="fp32"))
    assert set(result.engines) == set(manifest.graphs)
    assert all((folder / rec.file).stat().st_size == rec.bytes for rec in result.engines.values())

    ort_pipe = Pipeline.load(folder, "ort-cpu")
    trt_pipe = Pipeline.load(folder, "trt", cuda_graph=cuda_graph)
    inputs = ort_pipe.prepare_inputs(scene_image, PROMPT)
    ref, trt = ort_pipe.chain, trt_pipe.chain
    s_ref, s_trt = ref.new_state(), trt.new_state()
    f_ref, f_trt = ref.vision(inputs["pixel_values"]), trt.vision(inputs["pixel_values"])
    np.testing.assert_allclose(trt_pipe.backend.numpy(f_trt), f_ref, atol=2e-3, rtol=2e-3)
    want = ort_pipe.generate(scene_image, PROMPT, max_new_tokens=8).token_ids
    assert_export_decided(ort_pipe, scene_image, PROMPT, want, "ONNX Runtime's result")  # exact comparisons below
    o_ref, o_trt = ref.prefill(s_ref, inputs["input_ids"], f_ref), trt.prefill(s_trt, inputs["input_ids"], f_trt)
    assert o_trt.kept_indices == o_ref.kept_indices and o_trt.kept_length == o_ref.kept_length
    np.testing.assert_allclose(o_trt.logits, o_ref.logits, atol=2e-3, rtol=2e-3)
    token = int(np.argmax(o_ref.logits))
    for _ in range(6):
        l_ref, l_trt = ref.decode(s_ref, token), trt.decode(s_trt, token)
        np.testing.assert_allclose(l_trt, l_ref, atol=2e-3, rtol=2e-3)
        token = int(np.argmax(l_ref))
    # the whole pipeline on the engines gives the ONNX Runtime tokens
    assert trt_pipe.generate(scene_image, PROMPT, max_new_tokens=8).token_ids == want
