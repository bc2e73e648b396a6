"""The prepared GPU run (benchmarks/gpu.sh -> gpu_run.py) runs end to end on the CPU in its dry-run mode, so it
cannot rot between the sessions that have a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--device", "cpu", "--dry-run", "--work",
                           str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "=== GPU run summary ===" in proc.stdout
    out = tmp_path / "out"
    correctness = json.loads((out / "1-correctness-tiny.json").read_text())
    assert all(a["equal"] and a["kept_equal"] for a in correctness["agreement_vs_ort_cpu"].values())
    bench = json.loads((out / "2-bench-tiny.json").read_text())
    assert {r["label"] for r in bench["runs"]} >= {"topv ort-cuda keep=all", "topv ort-cuda keep=4", "transformers eager"}
    assert json.loads((out / "versions.json").read_text())["topv"]
