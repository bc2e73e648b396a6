"""topv-build's orchestration, run against the stand-in tensorrt module (fake_tensorrt.py).

These tests exercise topv's side of the build (profiles, flags, files, engines.json, --force, failures);
they do not exercise TensorRT itself.
"""

import json

import pytest

from topv.engines.build import BuildOptions, build_engines, plan_build, resolve_precision
from topv.engines.build_cli import main as build_main
from topv.engines.engine_manifest import read_engine_manifest
from topv.engines.errors import EngineBuildError
from topv.errors import ConfigError, OutputExistsError

GRAPHS = ["vision", "prefill_head", "prune", "prefill_tail", "decode_step"]


def _save_graph(folder, name, model):
    """Save an edited graph and update manifest.json as if it had been exported that way."""
    import onnx

    from topv.artifact.files import sha256_file

    onnx.save(model, str(folder / name))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _builds(trt):
    return {b["onnx"].rsplit("/", 1)[-1]: b for b in trt.BUILDS}


def test_build_writes_engines_and_manifest(standin_trt, pruned_export, copy_export, tmp_path, capsys):
    folder = copy_export(pruned_export)
    cache = tmp_path / "cache" / "timing.cache"
    code = build_main([str(folder), "--workspace", "1.5", "--timing-cache", str(cache), "--opt-level", "2", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "engines.json" in out and "Standin GPU" in out and "peak memory" in out
    for g in GRAPHS:
        assert (folder / f"{g}.engine").is_file()
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]
    m = read_engine_manifest(folder)
    assert m.tensorrt_version == standin_trt.__version__
    assert (m.gpu.name, m.gpu.compute_capability) == ("Standin GPU", "8.7")
    assert m.precision == "fp16" and not m.strongly_typed
    assert m.workspace_bytes == int(1.5 * 2**30) and m.builder_optimization_level == 2
    assert list(m.engines) == GRAPHS
    # The graphs that decide the kept tokens stay float32 (topv.precision), the rest take fp16.
    assert {g: e.precision for g, e in m.engines.items()} == {"vision": "fp32", "prefill_head": "fp32", "prune": "fp32",
                                                                "prefill_tail": "fp16", "decode_step": "fp16"}
    assert m.engines["prefill_head"].profile["dynamic"] and not m.engines["vision"].profile["dynamic"]
    assert m.peak_memory["host_rss_bytes"] > 0 and m.peak_memory["host_method"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert m.export["files"]["weights.bin"] == manifest["files"]["weights.bin"]["sha256"]
    builds = _builds(standin_trt)
    assert builds["prefill_tail.onnx"]["flags"] == ["FP16"] and builds["prefill_head.onnx"]["flags"] == []
    assert builds["prune.onnx"]["flags"] == [] and builds["prune.onnx"]["cleared"] == ["TF32"]
    assert builds["vision.onnx"]["profile"] == {}  # static shapes: no profile
    seq = m.engines["prefill_head"].profile["inputs"]["input_ids"]
    assert builds["prefill_head.onnx"]["cleared"] == ["TF32"]
    assert builds["prefill_head.onnx"]["profile"]["input_ids"] == [seq["min"], seq["opt"], seq["max"]]
    assert builds["decode_step.onnx"]["pools"] == {"WORKSPACE": int(1.5 * 2**30)}
    assert all(b["opt_level"] == 2 for b in builds.values())
    assert cache.read_bytes() == b"standin-cache:5"


def test_existing_engines_need_force(standin_trt, pruned_export, copy_export, capsys):
    folder = copy_export(pruned_export)
    build_engines(folder, BuildOptions(precision="bf16"))
    before = {p.name: p.read_bytes() for p in folder.glob("*.engine")}
    with pytest.raises(OutputExistsError, match="--force"):
        build_engines(folder, BuildOptions())
    assert build_main([str(folder), "-q"]) == 2
    assert "--force" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.glob("*.engine")} == before
    standin_trt.BUILDS.clear()
    build_engines(folder, BuildOptions(precision="fp32", force=True))
    assert read_engine_manifest(folder).precision == "fp32"
    assert _builds(standin_trt)["prefill_tail.onnx"]["cleared"] == ["TF32"]


def test_fp16_export_is_built_strongly_typed(standin_trt, full_fp16_export, copy_export):
    folder = copy_export(full_fp16_export)
    with pytest.raises(ConfigError, match="strongly typed"):
        build_engines(folder, BuildOptions(precision="bf16"))
    m = build_engines(folder, BuildOptions())
    assert m.strongly_typed and m.precision == "fp16"
    assert all(b["strongly_typed"] and b["flags"] == [] for b in standin_trt.BUILDS)


def test_parser_errors_are_listed(standin_trt, pruned_export, copy_export):
    import onnx

    folder = copy_export(pruned_export)
    model = onnx.load(str(folder / "prefill_tail.onnx"), load_external_data=False)
    node = model.graph.node[3]
    node.domain = "com.example"
    _save_graph(folder, "prefill_tail.onnx", model)
    with pytest.raises(EngineBuildError) as info:
        build_engines(folder, BuildOptions(static_check=False))
    text = str(info.value)
    assert "prefill_tail.onnx" in text and f"node #3 {node.name!r} ({node.op_type})" in text and "No importer" in text
    assert not list(folder.glob("*.engine")) and not (folder / "engines.json").exists()
    # by default the static check stops it before TensorRT is asked
    with pytest.raises(EngineBuildError, match="(?s)static check.*com.example"):
        build_engines(folder, BuildOptions())


def test_a_failed_build_leaves_the_old_engines(standin_trt, pruned_export, copy_export):
    folder = copy_export(pruned_export)
    build_engines(folder, BuildOptions())
    before = {p.name: p.read_bytes() for p in folder.glob("*.engine")} | {"engines.json": (folder / "engines.json").read_bytes()}
    standin_trt.FAIL_BUILD.add("decode_step.onnx")
    with pytest.raises(EngineBuildError, match="(?s)could not build an engine for decode_step.onnx.*GPU memory"):
        build_engines(folder, BuildOptions(force=True, precision="bf16"))
    after = {p.name: p.read_bytes() for p in folder.glob("*.engine")} | {"engines.json": (folder / "engines.json").read_bytes()}
    assert after == before
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


def test_plan_needs_no_tensorrt(pruned_export):
    from topv.artifact.manifest import read_manifest

    manifest = read_manifest(pruned_export)
    plan = plan_build(pruned_export, manifest, BuildOptions(precision="bf16"))
    assert [g.graph for g in plan.graphs] == GRAPHS and not plan.existing
    assert [g.precision for g in plan.graphs] == ["fp32", "fp32", "fp32", "bf16", "bf16"]
    follow = plan_build(pruned_export, manifest, BuildOptions(precision="bf16", kept_set="follow"))
    assert [g.precision for g in follow.graphs] == ["bf16", "bf16", "fp32", "bf16", "bf16"]  # the solve stays fp32
    assert plan.graphs[0].engine == pruned_export / "vision.engine"
    assert resolve_precision("fp32", None) == ("fp16", False)
    assert resolve_precision("fp16", None) == ("fp16", True)
    with pytest.raises(ConfigError):
        BuildOptions(precision="int8")
    with pytest.raises(ConfigError):
        BuildOptions(workspace_gib=0)
