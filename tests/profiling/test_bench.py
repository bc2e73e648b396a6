"""topv-bench end to end on a tiny random model: JSON content, ratios, table and plot."""

import importlib.util
import json

import pytest

from topv.profiling.cli import main as bench_main


@pytest.mark.slow
def test_bench_sweep_with_hf_baseline(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    out_png = tmp_path / "bench.png"
    rc = bench_main(["--model-shape", "tiny", "--keep-sweep", "all,4", "--backend", "ort-cpu", "--baseline", "hf",
                     "--prompt-tokens", "40", "--new-tokens", "4", "--repeats", "2", "--warmup", "1",
                     "--work-dir", str(tmp_path / "work"), "--json", str(out_json), "--plot", str(out_png), "--threads", "1"])
    assert rc == 0
    result = json.loads(out_json.read_text())
    meta = result["meta"]
    assert meta["prompt_tokens"] == 40 and meta["new_tokens"] == 4 and meta["repeats"] == 2
    assert {"torch", "onnxruntime", "transformers"} <= set(meta["versions"])
    assert meta["device"]["cpu"]
    labels = [r["label"] for r in result["runs"]]
    assert labels == ["topv ort-cpu keep=all", "topv ort-cpu keep=4", "transformers eager"]
    topv_all, topv_4, hf = result["runs"]
    for run in (topv_all, topv_4):
        assert run["new_tokens"] == 4 and run["prompt_tokens"] == 40
        for stage in ("vision", "prefill_head", "prune", "prefill_tail", "prefill", "ttft", "total", "decode_per_token"):
            assert run["stats"][stage]["n"] >= 2 and run["stats"][stage]["p50_ms"] >= 0
    assert topv_4["kept_prompt_tokens"] == 40 - 16 + 4
    assert topv_4["kv_cache_bytes"] < topv_4["kv_cache_bytes_unpruned"] == topv_all["kv_cache_bytes"]
    assert {"vision", "prefill", "ttft", "total"} <= set(hf["stats"])
    # transformers' TTFT and step times come from one generate() (a streamer): 3 steps after the first token, each run
    assert hf["stats"]["decode_per_token"]["n"] == 2 * 3
    assert hf["stats"]["ttft"]["p50_ms"] + hf["stats"]["decode_total"]["p50_ms"] <= hf["stats"]["total"]["p50_ms"] * 1.05
    ratios = result["ratios"]["topv ort-cpu keep=4"]
    assert {"total_speedup_vs_hf", "prefill_speedup_vs_keep_all", "kv_bytes_vs_unpruned"} <= set(ratios)
    assert out_png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "topv ort-cpu keep=4" in printed and "transformers eager" in printed


def test_prompt_of_exact_length(tiny_llava, scene_image):
    from topv.families.llava import LlavaProcessor
    from topv.profiling.bench import make_prompt

    processor = LlavaProcessor(tiny_llava[1])
    for target in (25, 60):
        prompt = make_prompt(processor, scene_image, target)
        assert processor.encode(scene_image, prompt)["input_ids"].shape[1] == target
    from topv.errors import InputError

    with pytest.raises(InputError, match="below"):
        make_prompt(processor, scene_image, 5)


def test_sweep_reuses_a_matching_export(tmp_path):
    from topv.profiling.bench import BenchOptions, _export_for, _model_for_shape

    opts = BenchOptions(work_dir=tmp_path, new_tokens=4)
    source = _model_for_shape("tiny", tmp_path, 0)
    b = _export_for(source, 4, opts, 40)
    stamp = (b / "manifest.json").stat().st_mtime_ns
    assert _export_for(source, 4, opts, 40) == b
    assert (b / "manifest.json").stat().st_mtime_ns == stamp  # reused, not rebuilt


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="the openvino backend needs OpenVINO: pip install 'topv[openvino]'")
def test_backend_options_each_in_its_own_process(tmp_path, capsys):
    """``--backend openvino:bf16,ort-cpu:low-memory --isolate``: each run in a fresh process, so its peak RSS is its own
    (at least what it held after loading, and not the parent's)."""
    out_json = tmp_path / "bench.json"
    rc = bench_main(["--model-shape", "tiny", "--keep-sweep", "4", "--backend", "openvino:bf16,ort-cpu:low-memory", "--isolate",
                     "--prompt-tokens", "40", "--new-tokens", "3", "--repeats", "1", "--warmup", "0",
                     "--work-dir", str(tmp_path / "work"), "--json", str(out_json), "--threads", "1"])
    assert rc == 0
    runs = json.loads(out_json.read_text())["runs"]
    assert [r["label"] for r in runs] == ["topv openvino:bf16 keep=4", "topv ort-cpu:low-memory keep=4"]
    for run in runs:
        assert run["isolated"] and run["new_tokens"] == 3
        assert run["process_peak_rss_bytes"] >= run["host_rss_before_load_bytes"] > 0
    assert "RSS MB" in capsys.readouterr().out


def test_unknown_backend_options_are_refused():
    from topv.errors import ConfigError
    from topv.profiling.bench import BenchOptions, backend_spec

    assert backend_spec("openvino:bf16:int8") == ("openvino", {"precision": "bf16", "weights": "int8"})
    with pytest.raises(ConfigError, match="unknown option.*fp8"):
        BenchOptions(backends=["openvino:fp8"])
    with pytest.raises(ConfigError, match="unknown backend 'onnx'"):
        BenchOptions(backends=["onnx"])


def test_kept_set_follow_reaches_the_int8_export_and_its_label(tmp_path, capsys):
    """``--quantize none,int8 --kept-set follow``: the int8 export quantizes vision and layers 0..K too (its manifest
    says so) and its runs are labelled apart from the default int8's; the float32 export is unaffected."""
    from topv.artifact.manifest import read_manifest
    from topv.errors import ConfigError
    from topv.profiling.bench import BenchOptions

    out_json = tmp_path / "bench.json"
    rc = bench_main(["--model-shape", "tiny", "--keep-sweep", "4", "--quantize", "none,int8", "--kept-set", "follow",
                     "--prompt-tokens", "40", "--new-tokens", "3", "--repeats", "1", "--warmup", "0",
                     "--work-dir", str(tmp_path / "work"), "--json", str(out_json), "--threads", "1"])
    assert rc == 0
    runs = json.loads(out_json.read_text())["runs"]
    assert [r["label"] for r in runs] == ["topv ort-cpu keep=4", "topv ort-cpu int8 kept-set=follow keep=4"]
    int8 = [read_manifest(p) for p in (tmp_path / "work" / "exports").iterdir() if p.name.count("-int8-")]
    assert len(int8) == 1 and int8[0].quantization["kept_set"] == "follow"
    assert {"vision", "prefill_head"} <= set(int8[0].quantization["graphs"])
    with pytest.raises(ConfigError, match="kept"):
        BenchOptions(kept_set="bf16")
