"""The trt backend against the stand-in tensorrt module on the CPU: same tokens as ONNX Runtime, and refusals.

The stand-in runs each "engine" with ONNX Runtime through the raw addresses the trt backend binds, so these
tests check topv's bindings, prefill copies and per-token KV slot writes, not TensorRT.
"""

import json

import pytest

from topv.engines.build import BuildOptions, build_engines
from topv.engines.engine_manifest import ENGINE_MANIFEST_NAME
from topv.errors import ChecksumMismatchError, ConfigError, IncompatibleArtifactError
from topv.runtime.pipeline import Pipeline

PROMPT = "What colour is the square?"


@pytest.fixture
def built(standin_trt, copy_export):
    def build(src, name="out"):
        folder = copy_export(src, name)
        build_engines(folder, BuildOptions())
        return folder

    return build


@pytest.mark.parametrize("which", ["pruned_export", "unpruned_export"])
def test_same_tokens_as_onnx_runtime(request, built, scene_image, which):
    folder = built(request.getfixturevalue(which))
    ort = Pipeline.load(folder, "ort-cpu", threads=1).generate(scene_image, PROMPT, max_new_tokens=10)
    pipe = Pipeline.load(folder, "trt", device="cpu", max_concurrency=2)
    trt = pipe.generate(scene_image, PROMPT, max_new_tokens=10)
    assert trt.token_ids == ort.token_ids
    assert trt.kept_indices == ort.kept_indices and trt.kept_length == ort.kept_length
    assert set(trt.timings) >= {"vision", "prefill_head", "prune", "prefill_tail", "decode", "ttft"}
    again = pipe.generate(scene_image, PROMPT, max_new_tokens=10)  # a reused KV state gives the same answer
    assert again.token_ids == ort.token_ids


def test_refuses_engines_from_another_tensorrt(built, pruned_export):
    folder = built(pruned_export)
    path = folder / ENGINE_MANIFEST_NAME
    data = json.loads(path.read_text())
    data["tensorrt_version"] = "10.3.0"
    path.write_text(json.dumps(data))
    with pytest.raises(IncompatibleArtifactError, match=r"TensorRT 10\.3\.0.*topv-build .* --force"):
        Pipeline.load(folder, "trt", device="cpu")


def test_refuses_engines_for_another_gpu(built, pruned_export, monkeypatch):
    from topv.engines import device as devmod
    from topv.engines.engine_manifest import GpuInfo

    folder = built(pruned_export)
    monkeypatch.setattr(devmod, "detect_gpu", lambda index=0: GpuInfo("NVIDIA A10", "8.6"))
    with pytest.raises(IncompatibleArtifactError, match="compute capability 8.7 .*8.6"):
        Pipeline.load(folder, "trt", device="cpu")


def test_refuses_damaged_or_stale_engines(built, pruned_export):
    folder = built(pruned_export)
    engine = folder / "prune.engine"
    data = bytearray(engine.read_bytes())
    data[-2] ^= 1
    engine.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="prune.engine"):
        Pipeline.load(folder, "trt", device="cpu")
    path = folder / ENGINE_MANIFEST_NAME
    record = json.loads(path.read_text())
    record["export"]["files"]["prefill_tail.onnx"] = "0" * 64
    path.write_text(json.dumps(record))
    with pytest.raises(IncompatibleArtifactError, match="prefill_tail.onnx changed"):
        Pipeline.load(folder, "trt", device="cpu")


def test_cpu_device_needs_the_standin(built, pruned_export, standin_trt, monkeypatch):
    folder = built(pruned_export)
    monkeypatch.setattr(standin_trt, "TOPV_STANDIN", False)
    with pytest.raises(ConfigError, match="CUDA devices"):
        Pipeline.load(folder, "trt", device="cpu")
