"""benchmarks/peers/summarize.py: medians over rounds, the three targets computed from the right runs, and a
refusal when the engines saw prompts of different lengths. (The benchmark itself needs its two virtualenvs
and ~15 minutes: `bash benchmarks/peers/run.sh`.)"""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def summarize():
    spec = importlib.util.spec_from_file_location("peers_summarize", ROOT / "benchmarks" / "peers" / "summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _genai(round_, precision, weights, total, ttft=300.0, rss=1400.0):
    return {"round": round_, "engine": "genai", "version": "2026.4.1", "precision": precision, "weights": weights, "keep": None,
            "threads": 2, "ttft_ms": ttft, "tpot_ms": 8.0, "total_ms": total, "load_s": 0.5, "peak_rss_mib": rss,
            "input_tokens": 616, "new_tokens": 32, "vision_and_embeddings_ms": 100.0}


def _topv(round_, backend, keep, total, precision="f32", weights="fp32", ttft=200.0, rss=1500.0, low_memory=False):
    hint = {"f32": "<Type: 'float32'>", "auto": "<Type: 'bfloat16'>"}[precision]
    return {"round": round_, "engine": "topv", "backend": backend, "precision": precision, "low_memory": low_memory, "keep": keep,
            "weights": weights, "threads": 2, "ttft_ms": ttft, "tpot_ms": 6.0, "total_ms": total, "load_s": 4.0,
            "peak_rss_mib": rss, "input_tokens": 616, "new_tokens": 32, "weights_bytes": 800 * 2**20,
            "kv_cache_bytes": 50 * 2**20, "stages_ms": {"preprocess": 5, "vision": 150, "prefill_head": 40, "prune": 3,
                                                         "prefill_tail": 10},
            "compiled": {"decode_step": {"precision": hint}} if backend == "openvino" else {}}


def test_medians_targets_and_tables(summarize, tmp_path):
    rows = []
    for r, slow in ((1, 1.0), (2, 1.5), (3, 1.1)):  # a slow round moves no median
        rows += [_genai(r, "default", "fp32", 560 * slow), _genai(r, "default", "int8", 450 * slow, rss=640),
                 _topv(r, "ort-cpu", None, 1000 * slow, low_memory=True, rss=1050),
                 _topv(r, "openvino", None, 500 * slow, precision="auto", rss=900),  # bf16: not a float32 memory result
                 _topv(r, "openvino", 64, 400 * slow, ttft=250),
                 _topv(r, "openvino", 64, 380 * slow, precision="auto", ttft=140),
                 _topv(r, "openvino", 64, 290 * slow, precision="auto", weights="int8", rss=1600)]
    bench = tmp_path / "bench.jsonl"
    bench.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out_json, out_md = tmp_path / "peers.json", tmp_path / "table.md"
    import sys

    argv = sys.argv
    sys.argv = ["summarize.py", str(bench), "--json", str(out_json), "--markdown", str(out_md)]
    try:
        assert summarize.main() == 0
    finally:
        sys.argv = argv
    result = json.loads(out_json.read_text())
    runs = {(e["label"], e["compute_precision"], e["keep"], e["weights"]): e for e in result["runs"]}
    assert runs[("topv openvino", "bf16", 64, "fp32")]["total_ms"] == 418.0  # median of 380, 570, 418
    targets = {t["target"].split(" >=")[0].split(":")[0]: t for t in result["targets"]}
    f32 = targets["topv keep 64 (f32)"]
    assert f32["speedup"] == pytest.approx(616 / 440, abs=1e-3) and not f32["met"]
    bf16 = targets["topv keep 64 (bf16)"]
    assert bf16["speedup"] == pytest.approx(616 / 418, abs=1e-3) and bf16["ttft_ratio"] == pytest.approx(140 / 300, abs=1e-3)
    assert bf16["met"]
    int8 = targets["int8 topv at keep 64"]
    assert int8["speedup"] == pytest.approx(495 / 319, abs=1e-3) and int8["rss_ratio"] == pytest.approx(1600 / 640, abs=1e-3)
    assert not int8["met"]  # fast enough, but more memory
    memory = targets["float32 export at keep all"]
    assert memory["topv"] == "topv ort-cpu low_memory" and memory["ratio"] == pytest.approx(1050 / 850, abs=1e-3)
    assert memory["met"]
    table = out_md.read_text()
    assert "| topv openvino | bf16 after the pruning decision" in table and "Where the time to the first token goes" in table


def test_prompts_of_different_lengths_are_refused(summarize, tmp_path, capsys):
    rows = [_genai(1, "default", "fp32", 560), dict(_topv(1, "ort-cpu", None, 900), input_tokens=615)]
    bench = tmp_path / "bench.jsonl"
    bench.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    import sys

    argv = sys.argv
    sys.argv = ["summarize.py", str(bench), "--json", str(tmp_path / "a.json"), "--markdown", str(tmp_path / "a.md")]
    try:
        assert summarize.main() == 1
    finally:
        sys.argv = argv
    assert "different lengths" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()
