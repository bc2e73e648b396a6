"""The openvino backend against ort-cpu: tokens and kept tokens in float32, every graph one by one, lower
precisions and int8 weights keeping the kept tokens, options refused with a reason, and the install hint.

Tests that run OpenVINO skip without it (install: pip install 'topv[openvino]').
"""

import importlib.util
import json
import sys

import numpy as np
import pytest

from tests._helpers import assert_export_decided, export_decided
from topv.errors import BackendUnavailableError, ConfigError
from topv.pruning.config import TopVConfig
from topv.runtime.chain import GraphChain, Recorder
from topv.runtime.pipeline import Pipeline
from topv.testing.llava import LlavaShape
from topv.testing.qwen import SHAPES as QWEN_SHAPES

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="the openvino backend needs OpenVINO: pip install 'topv[openvino]'")
needs_nncf = pytest.mark.skipif(importlib.util.find_spec("nncf") is None,
                                reason="int8 weights on openvino need NNCF: pip install 'topv[openvino]'")

CONFIG = TopVConfig()  # the defaults: TopV's key no longer saturates on random weights (tests/export/test_kept_agreement.py)
MODELS = {
    "llava": (LlavaShape(num_kv_heads=2, image_size=84, initializer_range=0.2), dict(keep=12)),
    "qwen2.5-vl": (QWEN_SHAPES["tiny-qwen2.5-vl"].replace(initializer_range=0.1), dict(keep=8, image_size=(112, 168))),
}
PROMPTS = ["w3 w14 w15 w9 w26", "w1", "w7 w7 w2"]


def _export(exports, name):
    shape, options = MODELS[name]
    return exports.export(f"ov-{name}", shape, layer=2, max_prompt_tokens=72, max_new_tokens=12, config=CONFIG, **options)


@pytest.fixture(scope="module", params=list(MODELS))
def folder(request, exports):
    return _export(exports, request.param)


@pytest.fixture(scope="module")
def ort_pipe(folder):
    return Pipeline.load(folder, "ort-cpu", threads=1)


@needs_openvino
def test_float32_gives_the_tokens_and_kept_tokens_of_ort_cpu(folder, ort_pipe, scene_image):
    ov_pipe = Pipeline.load(folder, "openvino", threads=1)
    for prompt in PROMPTS:
        want = ort_pipe.generate(scene_image, prompt, max_new_tokens=12, ignore_eos=True)
        assert_export_decided(ort_pipe, scene_image, prompt, want.token_ids, prompt)  # other kernels: margins first
        got = ov_pipe.generate(scene_image, prompt, max_new_tokens=12, ignore_eos=True)
        assert got.kept_indices == want.kept_indices
        assert got.token_ids == want.token_ids


@needs_openvino
def test_every_graph_matches_onnx_runtime(folder, ort_pipe, scene_image):
    """Each graph on the inputs ONNX Runtime's chain fed it (prefill and three decode steps): integer outputs
    identical, float outputs within float32 rounding of different kernels (measured: ~4e-7 of the largest value)."""
    recorder = Recorder(ort_pipe.backend)
    manifest = ort_pipe.manifest
    chain = GraphChain.for_manifest(recorder, manifest)
    inputs = ort_pipe.prepare_inputs(scene_image, PROMPTS[0])
    state = chain.new_state()
    out = chain.prefill(state, inputs["input_ids"], chain.vision(inputs["pixel_values"]))
    token = int(np.argmax(out.logits))
    for position in range(3):
        token = int(np.argmax(chain.decode(state, token)))
    ov_backend = Pipeline.load(folder, "openvino", threads=1).backend
    seen = set()
    for call in recorder.calls:
        seen.add(call.graph)
        got = ov_backend.run(call.graph, call.feeds, call.axes)
        for name, want in call.outputs.items():
            have = np.asarray(got[name])
            assert have.shape == want.shape, (call.graph, name)
            if np.issubdtype(want.dtype, np.integer):
                np.testing.assert_array_equal(have, want, err_msg=f"{call.graph}.{name}")
            else:
                scale = max(1.0, float(np.abs(want).max()))
                np.testing.assert_allclose(have, want, rtol=0, atol=1e-5 * scale, err_msg=f"{call.graph}.{name}")
    assert seen == set(manifest.graphs)


@needs_openvino
@pytest.mark.parametrize("precision,weights", [("bf16", None), ("auto", None),
                                               pytest.param("f32", "int8", marks=needs_nncf)])
def test_lower_precisions_keep_the_kept_tokens(folder, ort_pipe, scene_image, precision, weights):
    """The graphs that choose the kept tokens stay float32, so they are identical on every precision; the
    logits drift by bf16's or int8's rounding only (8-bit mantissa: ~0.4% per value; cosine well above 0.99)."""
    from topv.evaluation.agreement import Agreement, compare

    pipe = Pipeline.load(folder, "openvino", threads=1, precision=precision, weights=weights)
    described = pipe.backend.describe()
    assert described["prune"]["precision"].endswith("float32'>") and described["vision"]["weights"] == "fp32"
    if weights:
        assert described["decode_step"]["weights"] == "int8"
    import openvino

    if precision == "bf16" and "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert described["decode_step"]["precision"].endswith("bfloat16'>")
    totals = Agreement()
    for prompt in PROMPTS:
        compare(ort_pipe, pipe, scene_image, prompt, 8, totals)
    report = totals.to_json()
    assert report["kept_indices_identical"] == len(PROMPTS)
    assert report["logits_cosine_min"] > 0.99, report


@needs_openvino
@needs_nncf
def test_int8_weights_are_made_once_and_cached(exports, monkeypatch, tmp_path):
    import nncf

    folder = _export(exports, "llava")
    monkeypatch.setenv("TOPV_CACHE_DIR", str(tmp_path / "cache"))
    Pipeline.load(folder, "openvino", threads=1, weights="int8")
    cached = sorted(p.name for p in (tmp_path / "cache" / "openvino").glob("*/*.xml"))
    assert cached == ["decode_step.xml", "prefill_tail.xml"]  # the graphs after the pruning decision only

    def refuse(*args, **kwargs):
        raise AssertionError("compressed again although the cache holds the weights")

    monkeypatch.setattr(nncf, "compress_weights", refuse)
    Pipeline.load(folder, "openvino", threads=1, weights="int8")


def test_options_a_backend_does_not_take_are_refused(exports):
    folder = _export(exports, "llava")
    with pytest.raises(ConfigError, match="ort-cpu backend does not take precision='bf16'.*option of openvino"):
        Pipeline.load(folder, "ort-cpu", precision="bf16")
    with pytest.raises(ConfigError, match="torch backend does not take weights='int8'"):
        Pipeline.load(folder, "torch", weights="int8")
    if importlib.util.find_spec("openvino") is None:
        return
    with pytest.raises(ConfigError, match="openvino backend does not take low_memory"):
        Pipeline.load(folder, "openvino", low_memory=True)
    with pytest.raises(ConfigError, match="precision must be one of f32, bf16, f16, auto.*'fp8'"):
        Pipeline.load(folder, "openvino", precision="fp8")
    with pytest.raises(ConfigError, match="CUDA device.*ort-cuda"):
        Pipeline.load(folder, "openvino", device="cuda:0")
    with pytest.raises(ConfigError, match="no device 'NPU7'"):
        Pipeline.load(folder, "openvino", device="npu7")


def test_without_openvino_the_error_says_how_to_install_it(exports, monkeypatch):
    folder = _export(exports, "llava")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'topv\[openvino\]'"):
        Pipeline.load(folder, "openvino")


def test_ort_low_memory_gives_the_same_tokens(exports, scene_image):
    folder = _export(exports, "llava")
    a = Pipeline.load(folder, "ort-cpu", threads=1).generate(scene_image, PROMPTS[0], max_new_tokens=12, ignore_eos=True)
    b = Pipeline.load(folder, "ort-cpu", threads=1, low_memory=True).generate(scene_image, PROMPTS[0], max_new_tokens=12,
                                                                               ignore_eos=True)
    assert (a.token_ids, a.kept_indices) == (b.token_ids, b.kept_indices)


@needs_openvino
def test_topv_run_cli_on_openvino(exports, scene_image, tmp_path, capsys):
    from topv.runtime.cli import main as run_main

    folder = _export(exports, "llava")
    image = tmp_path / "scene.png"
    scene_image.save(image)
    args = [str(folder), "--image", str(image), "--prompt", PROMPTS[0], "--json", "--threads", "1"]
    assert run_main(args) == 0
    want = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert_export_decided(Pipeline.load(folder, threads=1), scene_image, PROMPTS[0], want["token_ids"][:1])
    assert run_main(args + ["--backend", "openvino", "--precision", "bf16"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["kept_indices"] == want["kept_indices"]
    assert run_main(args + ["--precision", "bf16"]) == 2  # ort-cpu has no bf16
    assert "does not take precision" in capsys.readouterr().err


@needs_openvino
@pytest.mark.slow
def test_the_bundled_model_on_openvino(tmp_path):
    """The bundled LLaVA exported with TopV pruning: the demo's questions get ort-cpu's tokens and kept tokens."""
    from pathlib import Path

    from topv.evaluation.evaluate import load_jsonl
    from topv.export.exporter import ExportOptions, export_model

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "bundled-k16"
    export_model(root / "models" / "topv-shapes-vqa", out, ExportOptions(keep=16, layer=2, max_new_tokens=8, threads=1))
    ort, ov = Pipeline.load(out, "ort-cpu", threads=1), Pipeline.load(out, "openvino", threads=1)
    compared = 0
    for ex in load_jsonl(root / "data" / "shapes-vqa" / "test.jsonl", limit=12):
        a, b = (p.generate(ex.image, ex.question, max_new_tokens=8) for p in (ort, ov))
        # Flat backgrounds give near-ties of TopV's key on real scenes too (test question 0: a boundary margin of
        # 8e-4): those could be decided by rounding and are not compared exactly.
        if export_decided(ort, ex.image, ex.question, a.token_ids)[0]:
            assert (b.token_ids, b.kept_indices) == (a.token_ids, a.kept_indices)
            compared += 1
    assert compared >= 8
