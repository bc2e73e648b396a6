"""On a machine with TensorRT and an NVIDIA GPU: build the tiny exports and compare with ONNX Runtime.

Skipped elsewhere (TensorRT cannot be installed on the machines this project's CI uses). The engines are
built in fp32 (TF32 off) so the comparison with ONNX Runtime's CPU results can use tight tolerances.
"""

import json

import numpy as np
import pytest

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
    from topv.engines.build import BuildOptions, build_engines
    from topv.engines.runtime import TrtExecutor
    from topv.inputs import encode
    from topv.runtime.pipeline import Pipeline

    folder = copy_export(request.getfixturevalue(which))
    manifest = json.loads((folder / "manifest.json").read_text())
    result = build_engines(folder, BuildOptions(precision="fp32"))
    assert set(result.engines) == set(manifest["graphs"])
    assert all((folder / rec.file).stat().st_size == rec.bytes for rec in result.engines.values())

    ort_pipe = Pipeline.load(folder, "ort-cpu")
    inputs = encode(ort_pipe.processor, scene_image, PROMPT, return_tensors="np")
    ids = np.asarray(inputs["input_ids"], dtype=np.int64)
    pixels = np.asarray(inputs["pixel_values"], dtype=np.float32)
    ref, trt = ort_pipe.executor, TrtExecutor(folder, manifest, cuda_graph=cuda_graph)
    s_ref, s_trt = ref.new_state(), trt.new_state()
    f_ref, f_trt = ref.vision(pixels), trt.vision(pixels)
    np.testing.assert_allclose(f_trt.float().cpu().numpy(), f_ref, atol=2e-3, rtol=2e-3)
    o_ref, o_trt = ref.prefill(s_ref, ids, f_ref), trt.prefill(s_trt, ids, f_trt)
    assert o_trt["kept_indices"] == o_ref["kept_indices"]
    assert o_trt["kept_length"] == o_ref["kept_length"]
    np.testing.assert_allclose(o_trt["logits"], o_ref["logits"], atol=2e-3, rtol=2e-3)
    token, position = int(np.argmax(o_ref["logits"])), ids.shape[1]
    for _ in range(6):
        l_ref = ref.decode(s_ref, token, position).copy()
        l_trt = trt.decode(s_trt, token, position).copy()
        np.testing.assert_allclose(l_trt, l_ref, atol=2e-3, rtol=2e-3)
        token, position = int(np.argmax(l_ref)), position + 1
    # the whole pipeline on the engines gives the ONNX Runtime tokens
    assert Pipeline.load(folder, "trt").generate(scene_image, PROMPT, max_new_tokens=8).token_ids == \
        ort_pipe.generate(scene_image, PROMPT, max_new_tokens=8).token_ids
