"""Operator profiles from ONNX Runtime's traces: the parser on a hand-written trace (fallbacks, Memcpy nodes,
the last of several requests), a real profile against the request's own stage timings, and the folder rules."""

import json

import pytest

from topv.errors import ConfigError, OutputExistsError
from topv.profiling.op_profile import prepare_profile_dir, profile_export, summarize_graph
from topv.runtime.pipeline import Pipeline
from topv.testing.llava import LlavaShape

SHAPE = LlavaShape(initializer_range=0.2)


def _event(cat, name, ts, dur, **args):
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "ph": "X", "pid": 1, "tid": 1, "args": args}


def _node(name, op, provider, ts, dur):
    return _event("Node", f"{name}_kernel_time", ts, dur, op_name=op, provider=provider)


def test_summary_keeps_the_last_request_and_finds_fallbacks_and_copies(tmp_path):
    cuda, cpu = "CUDAExecutionProvider", "CPUExecutionProvider"
    events = [_event("Session", "session_initialization", 0, 50)]
    for start in (100, 200, 300, 400):  # two requests of two runs each
        events += [_event("Session", "model_run", start, 40), _node("mm", "MatMul", cuda, start + 1, 10),
                   _node("copy", "MemcpyToHost", cuda, start + 12, 3), _node("nz", "NonZero", cpu, start + 16, 2000 if start < 300 else 5)]
    path = tmp_path / "g.json"
    path.write_text(json.dumps(events))
    s = summarize_graph(path, requests=2, provider=cuda)
    assert s["runs"] == 2 and s["wall_ms"] == pytest.approx(0.080)  # the first request's slow NonZero is not counted
    assert [o["op"] for o in s["ops"]] == ["MatMul", "NonZero", "MemcpyToHost"]
    assert s["ops"][0]["ms"] == pytest.approx(0.020) and s["ops"][0]["nodes_per_run"] == 1
    assert s["fallback_count"] == 1 and s["fallback_nodes"][0] == {"node": "nz", "op": "NonZero", "provider": cpu, "ms": 0.010}
    assert s["memcpy"] == {"nodes_per_run": 1, "ms": pytest.approx(0.006)}
    assert s["providers"] == {cuda: pytest.approx(0.026), cpu: pytest.approx(0.010)}
    with pytest.raises(ValueError, match="3 identical requests"):
        summarize_graph(path, requests=3, provider=cuda)


@pytest.fixture(scope="module")
def folder(exports):
    return exports.export("op-profile", SHAPE, keep=4, validate_tokens=2)


def test_profile_of_a_request_matches_its_stage_timings(folder, scene_image, tmp_path):
    out = prepare_profile_dir(tmp_path / "prof", [folder])
    s = profile_export(folder, "ort-cpu", out / "ort-cpu", scene_image, "Describe the image .", new_tokens=5, threads=1)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(s["graphs"]) == set(manifest["graphs"])
    assert s["graphs"]["decode_step"]["runs"] == 4 and all(g["runs"] == 1 for k, g in s["graphs"].items() if k != "decode_step")
    timings = s["request_timings_ms"]
    for graph, g in s["graphs"].items():
        stage = sum(timings["decode"]) if graph == "decode_step" else timings[graph]
        assert g["node_ms"] <= g["wall_ms"] <= stage * 1.05 + 0.2, graph  # nodes inside runs, runs inside the stage
        assert g["ops"] and g["fallback_count"] == 0 and g["memcpy"]["nodes_per_run"] == 0
    assert any(o["op"] in ("MatMul", "FusedMatMul") for o in s["graphs"]["decode_step"]["ops"][:3])
    saved = json.loads((out / "ort-cpu" / "profile.json").read_text())
    assert saved["written_by"].startswith("topv") and saved["graphs"]["prune"]["trace"].startswith("prune_")
    assert (out / "ort-cpu" / "profile.png").stat().st_size > 10_000


def test_profiling_options_are_refused_where_they_cannot_apply(folder, tmp_path):
    with pytest.raises(ConfigError, match="ort-cpu and ort-cuda"):
        Pipeline.load(folder, "torch", profile_dir=tmp_path / "p")
    with pytest.raises(ConfigError, match="export folder"):
        Pipeline.load(folder, "ort-cpu", profile_dir=folder / "traces")
    assert not (folder / "traces").exists()


def test_profile_folder_is_new_empty_or_ours(folder, tmp_path):
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not an empty folder"):
        prepare_profile_dir(users, [])
    with pytest.raises(OutputExistsError, match="inside"):
        prepare_profile_dir(folder / "p", [folder])
    ours = prepare_profile_dir(tmp_path / "new", [])
    (ours / "x").mkdir()
    assert prepare_profile_dir(ours, []) == ours and (users / "notes.txt").read_text() == "mine"


def test_bench_writes_one_profile_per_onnx_runtime_run(tmp_path, capsys):
    from topv.profiling.cli import main as bench_main

    argv = ["--model-shape", "tiny", "--keep-sweep", "4", "--backend", "ort-cpu,torch", "--new-tokens", "3", "--repeats", "1",
            "--warmup", "0", "--threads", "1", "--work-dir", str(tmp_path / "work"), "--json", str(tmp_path / "b.json")]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    assert bench_main([*argv, "--op-profile", str(foreign)]) == 2
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "work").exists()  # refused before any work
    assert bench_main([*argv, "--op-profile", str(tmp_path / "prof")]) == 0
    profiles = json.loads((tmp_path / "b.json").read_text())["op_profiles"]
    assert list(profiles) == ["ort-cpu keep=4"]  # torch has no ONNX Runtime trace
    assert (tmp_path / "prof" / "ort-cpu-keep-4" / "profile.json").is_file()
    assert profiles["ort-cpu keep=4"]["graphs"]["decode_step"]["runs"] == 2
    assert "op profile ort-cpu keep=4" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_a_device_profiler_that_cannot_start_costs_the_request_nothing(tmp_path):
    """On CUDA the last request also runs under torch's profiler; where it cannot start (here: no CUDA), the request
    still runs once and returns its result, and the reason is recorded instead of the kernel list."""
    from topv.profiling.op_profile import _with_device_kernels

    calls = []
    result, kernels = _with_device_kernels(lambda: calls.append(1) or "answer", tmp_path)
    assert result == "answer" and calls == [1]
    assert "error" in kernels or kernels["kernels"] == 0


def test_bench_profiles_of_float_and_int8_exports_are_kept_apart(tmp_path, monkeypatch):
    """With --quantize none,int8 each export gets its own profile (and int8 graphs only on ort-cpu, as measured)."""
    from topv.profiling import bench, op_profile

    calls = []

    def fake(folder, spec, out_dir, *args, **kwargs):
        calls.append((spec, str(out_dir)))
        return {"wall_ms": 1.0, "fallback_nodes": 0, "memcpy_nodes_per_request": 0.0, "graphs": {}}

    monkeypatch.setattr(op_profile, "profile_export", fake)
    monkeypatch.setattr(bench, "_measure_export", lambda *a, **k: None)
    options = bench.BenchOptions(backends=["ort-cpu", "ort-cuda"], keeps=[4], quantize=[None, "int8"], new_tokens=3, repeats=1,
                                 warmup=0, threads=1, device="cpu", work_dir=tmp_path / "work", model_shape="tiny",
                                 op_profile=tmp_path / "prof")
    result = bench.run_bench(None, options)
    assert sorted(result["op_profiles"]) == ["ort-cpu int8 keep=4", "ort-cpu keep=4", "ort-cuda keep=4"]
    assert len({folder for _, folder in calls}) == 3
