"""The prepared GPU run (benchmarks/gpu.sh -> gpu_run.py) runs end to end on the CPU in its dry-run mode, so it
cannot rot between the sessions that have a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_gpu_script_dry_run_on_cpu(tmp_path, dtype):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--device", "cpu", "--dry-run", "--dtype", dtype,
                           "--work", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "=== GPU run summary ===" in proc.stdout
    out = tmp_path / "out"
    correctness = json.loads((out / "1-correctness-tiny.json").read_text())
    assert correctness["dtype"] == dtype and correctness["validation"]["ok"]
    assert all(a["equal"] and a["kept_equal"] for a in correctness["agreement_vs_ort_cpu"].values())
    bench = json.loads((out / "2-bench-tiny.json").read_text())
    assert {r["label"] for r in bench["runs"]} >= {"topv ort-cuda keep=all", "topv ort-cuda keep=4", "transformers eager"}
    assert not (out / "2-bench-tiny.partial.json").exists()  # a finished tier leaves only its full result
    assert json.loads((out / "versions.json").read_text())["topv"]
    # the operator profile of tier 1's export: every graph of it, summaries in OUT, the traces left in --work
    profile = json.loads((out / "profile-tiny" / "profile.json").read_text())
    assert set(profile["graphs"]) == set(json.loads((Path(correctness["export"]) / "manifest.json").read_text())["graphs"])
    assert profile["fallback_nodes"] == 0 and (out / "profile-tiny" / "profile.png").stat().st_size > 0
    assert not list(out.rglob("*_20*.json")) and list((tmp_path / "work" / "profiles").rglob("decode_step_*.json"))


def test_gpu_script_preflight_names_what_is_missing(tmp_path):
    """Without a module the run needs (here PIL, as on a GPU machine without Pillow), nothing runs: exit 2, the reason."""
    code = ("import importlib.util, runpy, sys; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda n, *a: None if n == 'PIL' else real(n, *a); "
            f"sys.argv = ['gpu_run.py', '--out', {str(tmp_path / 'out')!r}, '--device', 'cpu', '--dry-run']; "
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_run.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "PIL" in (tmp_path / "out" / "preflight.txt").read_text()
    assert not list((tmp_path / "out").glob("1-*"))
