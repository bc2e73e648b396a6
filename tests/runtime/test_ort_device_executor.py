"""The ort-cuda backend's binding and device-buffer logic, run on the CPU provider with CPU tensors.

No GPU is needed: the same code path binds torch tensors by address and writes KV slots in place;
only the device differs. On a GPU machine, the `cuda` test runs it for real.
"""

import pytest

from topv.runtime.pipeline import Pipeline
from topv.testing.llava import LlavaShape

from tests._helpers import assert_export_decided

SHAPE = LlavaShape(num_kv_heads=2, image_size=84, initializer_range=0.2)


def _device_pipeline(folder, device):
    base = Pipeline.load(folder, threads=1)
    return base, Pipeline.load(folder, "ort-cuda", threads=1, device=device)


@pytest.mark.parametrize("keep", [10, None])
def test_device_executor_on_cpu_matches_the_host_executor(exports, scene_image, keep):
    # one session configuration, one CPU provider: the same kernels, so the results are equal whatever the margins
    folder = exports.export("device-6x6", SHAPE, keep=keep, layer=1, max_new_tokens=20)
    host, device = _device_pipeline(folder, "cpu")
    for prompt in ("w1 w2 w3", "w8"):
        a = host.generate(scene_image, prompt, max_new_tokens=20)
        b = device.generate(scene_image, prompt, max_new_tokens=20)
        assert b.token_ids == a.token_ids
        assert b.kept_indices == a.kept_indices
    # Buffers are allocated once and reused: the same tensor objects serve the next request.
    assert device.backend.name == "ort-cuda" and device.backend.device.type == "cpu"
    state = device._states.get()
    ptrs = [k.data_ptr() for k in state.cache.keys]
    device._states.put(state)
    device.generate(scene_image, "w5", max_new_tokens=4)
    state = device._states.get()
    assert [k.data_ptr() for k in state.cache.keys] == ptrs
    device._states.put(state)


@pytest.mark.cuda
def test_ort_cuda_matches_ort_cpu(exports, scene_image):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs an NVIDIA GPU with onnxruntime-gpu (CUDAExecutionProvider)")
    folder = exports.export("device-6x6", SHAPE, keep=10, layer=1, max_new_tokens=20)
    cpu = Pipeline.load(folder, "ort-cpu")
    gpu = Pipeline.load(folder, "ort-cuda")
    a = cpu.generate(scene_image, "w1 w2 w3", max_new_tokens=20)
    assert_export_decided(cpu, scene_image, "w1 w2 w3", a.token_ids, "ort-cpu")  # other kernels: compare what is decided
    b = gpu.generate(scene_image, "w1 w2 w3", max_new_tokens=20)
    assert b.token_ids == a.token_ids and b.kept_indices == a.kept_indices


def test_a_cuda_provider_that_did_not_start_is_an_error_not_a_cpu_run(exports, monkeypatch):
    """ONNX Runtime falls back to its CPU provider when the CUDA one cannot load (libraries, driver) and only logs it;
    binding device pointers to such a session would be wrong, so ort-cuda refuses it (seen with onnxruntime-gpu
    1.31.1 imported before torch on a machine without the driver)."""
    import onnxruntime
    import torch

    from topv.errors import BackendUnavailableError
    from topv.runtime.backends.ort_cuda import backend as ort_cuda

    folder = exports.export("device-6x6", SHAPE, keep=10, layer=1, max_new_tokens=20)

    class FallenBack:
        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "preload_dlls", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: type("S", (), {"cuda_stream": 0})())
    monkeypatch.setattr("topv.config.check_device", lambda device, default="cpu": "cuda:0")
    opened = []
    monkeypatch.setattr(ort_cuda, "open_session", lambda path, opts, providers: opened.append(providers) or FallenBack())
    with pytest.raises(BackendUnavailableError, match="could not start its CUDA provider"):
        Pipeline.load(folder, "ort-cuda", device="cuda", verify_checksums=False)
    assert opened and opened[0][0][0] == "CUDAExecutionProvider"
    assert opened[0][0][1]["use_tf32"] == "0"  # the fp32 islands (TopV's cost, Sinkhorn) stay float32 on the GPU


def test_a_captured_decode_step_serves_one_kv_state_only(exports):
    from topv.errors import ConfigError

    folder = exports.export("device-6x6", SHAPE, keep=10, layer=1, max_new_tokens=20)
    pipe = Pipeline.load(folder, "ort-cuda", threads=1, device="cpu")  # its one state is bound at load
    pipe.backend.cuda_graph = True  # as on a GPU with cuda_graph=True
    with pytest.raises(ConfigError, match="max_concurrency=1"):
        pipe.chain.new_state()
