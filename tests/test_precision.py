"""One float32 policy for what decides the kept set (topv.precision), used by every consumer alike."""

import pytest

from topv.artifact import names as n
from topv.errors import ConfigError
from topv.precision import KEPT_SET_GRAPHS, check_kept_set, float32_graphs

ALL = (n.VISION, n.PREFILL_HEAD, n.PRUNE, n.PREFILL_TAIL, n.DECODE_STEP)


@pytest.fixture(scope="module")
def pruned_export(exports):
    from tests.engines.conftest import GQA

    return exports.export("engines-gqa", GQA, keep=6, layer=1, validate_tokens=2)  # the engine tests' export


@pytest.fixture(scope="module")
def unpruned_export(exports):
    from tests.engines.conftest import GQA

    return exports.export("engines-gqa", GQA, keep=None, validate_tokens=2)


def test_the_policy():
    assert float32_graphs(True) == {n.VISION, n.PREFILL_HEAD, n.PRUNE} == set(KEPT_SET_GRAPHS)
    assert float32_graphs(True, "follow") == {n.PRUNE}  # the solve itself never follows
    assert float32_graphs(False) == float32_graphs(False, "follow") == frozenset()  # no kept set to protect
    with pytest.raises(ConfigError, match="kept_set must be one of float32, follow"):
        check_kept_set("fp16")


@pytest.mark.parametrize("kept_set", ["float32", "follow"])
def test_every_consumer_keeps_the_same_graphs(kept_set, pruned_export, tmp_path):
    """The engine build, OpenVINO's compile plan, int8 quantization and the Polygraphy commands: one set."""
    from topv.artifact.manifest import read_manifest
    from topv.engines.build import BuildOptions, plan_build
    from topv.export.quantize import quantized_graphs
    from topv.runtime.backends.openvino.setup import plan as openvino_plan
    from topv.runtime.backends.trt.polygraphy import polygraphy_commands

    manifest = read_manifest(pruned_export)
    want = float32_graphs(True, kept_set)
    trt = plan_build(pruned_export, manifest, BuildOptions(precision="fp16", kept_set=kept_set))
    assert {g.graph for g in trt.graphs if g.precision == "fp32"} == want
    ov = openvino_plan(manifest, "bf16", "int8", kept_set)
    assert {g for g, p in ov.items() if p == {"precision": "f32", "weights": None}} == want
    assert set(quantized_graphs(True, kept_set)) == {n.VISION, n.PREFILL_HEAD, n.PREFILL_TAIL, n.DECODE_STEP} - want
    commands = polygraphy_commands(pruned_export, manifest, {g: tmp_path / f"{g}.json" for g in ALL}, "fp16", kept_set)
    built_fp16 = {g for g in ALL for c in commands if f"{g}.onnx --onnxrt --trt" in c and "--fp16" in c}
    assert built_fp16 == set(ALL) - want


def test_without_pruning_every_graph_takes_the_precision(unpruned_export):
    from topv.artifact.manifest import read_manifest
    from topv.engines.build import BuildOptions, plan_build
    from topv.export.quantize import quantized_graphs
    from topv.runtime.backends.openvino.setup import plan as openvino_plan

    manifest = read_manifest(unpruned_export)
    assert {g.precision for g in plan_build(unpruned_export, manifest, BuildOptions(precision="fp16")).graphs} == {"fp16"}
    assert {p["precision"] for p in openvino_plan(manifest, "bf16", None).values()} == {"bf16"}
    assert quantized_graphs(False) == ["vision", "prefill_head", "prefill_tail", "decode_step"]


def test_kept_set_is_refused_where_nothing_follows_it():
    from topv.export.exporter import ExportOptions
    from topv.runtime.backends.base import BackendOptions
    from topv.runtime.backends.ort.backend import OrtBackend

    with pytest.raises(ConfigError, match="without --quantize there is nothing for them to follow"):
        ExportOptions(keep=4, kept_set="follow")
    with pytest.raises(ConfigError, match="does not take kept_set='follow'"):
        OrtBackend.check_options(BackendOptions(kept_set="follow"))
    with pytest.raises(ConfigError, match="kept_set must be one of"):
        OrtBackend.check_options(BackendOptions(kept_set="bf16"))
