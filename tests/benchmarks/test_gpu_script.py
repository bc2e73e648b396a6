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
    assert sorted(p.name for p in out.iterdir()) == ["gpu-results.json", "log.txt", "profile-tiny.png"]  # <= 8 files back
    results = json.loads((out / "gpu-results.json").read_text())
    tiers = results["tiers"]
    assert list(tiers) == ["1-correctness-tiny", "1-profile-tiny", "2-bench-tiny", "3-cuda-graph", "4-bench-tiny-keepall"]
    assert results["versions"]["topv"] and len(results["summary"]) == 5 and "=== GPU run summary ===" in (out / "log.txt").read_text()
    correctness = tiers["1-correctness-tiny"]
    assert correctness["dtype"] == dtype and correctness["validation"]["ok"]
    assert set(correctness["agreement"]) == {"torch vs ort-cpu", "ort-cuda vs ort-cpu", "ort-cuda vs torch"}
    assert all(a["equal"] and a["kept_equal"] for a in correctness["agreement"].values())
    bench = tiers["2-bench-tiny"]
    assert [r["label"] for r in bench["runs"]] == ["topv ort-cuda keep=4", "transformers eager"] and "partial" not in bench
    keep_all = tiers["4-bench-tiny-keepall"]
    assert [r["label"] for r in keep_all["runs"]] == ["topv ort-cuda keep=all"]
    both = keep_all["ratios_with_earlier_tier"]["topv ort-cuda keep=4"]  # keep 4 against keep all across the two tiers
    assert {"total_speedup_vs_keep_all", "total_speedup_vs_hf", "kv_bytes_vs_unpruned"} <= set(both)
    graph = tiers["3-cuda-graph"]["cuda_graph"]["tiny"]
    assert graph["agreement"]["ort-cuda+graph vs ort-cuda"]["equal"]
    assert all(r["same_tokens_every_run"] and r["decode_ms_per_token_p50"] > 0 for r in graph["runs"].values())
    # the operator profile of tier 1's export: every graph of it, the summary in the results, the traces left in --work
    profile = tiers["1-profile-tiny"]["profile"]
    assert set(profile["graphs"]) == set(json.loads((Path(correctness["export"]) / "manifest.json").read_text())["graphs"])
    assert profile["fallback_nodes"] == 0 and (out / "profile-tiny.png").stat().st_size > 0
    assert list((tmp_path / "work" / "profiles").rglob("decode_step_*.json"))


def test_gpu_script_preflight_names_what_is_missing(tmp_path):
    """Without a module the run needs (here PIL, as on a GPU machine without Pillow), nothing runs: exit 2, the reason."""
    code = ("import importlib.util, runpy, sys; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda n, *a: None if n == 'PIL' else real(n, *a); "
            f"sys.argv = ['gpu_run.py', '--out', {str(tmp_path / 'out')!r}, '--device', 'cpu', '--dry-run']; "
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_run.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "PIL" in (tmp_path / "out" / "preflight.txt").read_text()
    assert not (tmp_path / "out" / "gpu-results.json").exists()  # no tier ran


def _gpu_run_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_run_under_test", ROOT / "benchmarks" / "gpu_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_backend_that_raises_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    mod = _gpu_run_module()
    real = mod._generate

    def flaky(folder, backend, *args, **kwargs):
        if backend == "torch":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(folder, backend, *args, **kwargs)

    monkeypatch.setattr(mod, "_generate", flaky)
    args = mod._parser().parse_args(["--out", str(tmp_path / "o"), "--device", "cpu", "--dry-run", "--work", str(tmp_path / "w")])
    with pytest.raises(RuntimeError, match="tier 1 has no export of tiny"):
        mod.profile("tiny", args, tmp_path / "o")  # a later tier names the missing export instead of a KeyError
    mod.TRIED.add("tiny")  # as if tier 1's export had failed: the bench tier refuses at once instead of exporting again
    with pytest.raises(RuntimeError, match="not exporting it again"):
        mod.bench("tiny", args, None, "2-bench-tiny", [4], True)
    mod.TRIED.clear()
    result = mod.correctness("tiny", 4, args)
    assert "illegal memory access" in result["runs"]["torch"]["error"]
    assert set(result["agreement"]) == {"ort-cuda vs ort-cpu"} and result["agreement"]["ort-cuda vs ort-cpu"]["equal"]
    assert "torch FAILED: RuntimeError: CUDA error" in mod._line("1-correctness-tiny", {**result, "seconds": 1.0})


def test_wheel_parts_are_sized_from_what_a_device_call_sends(tmp_path):
    """Every device call sends the working tree (tracked and untracked-not-ignored files) next to one wheel part,
    64 MiB in all. Measured on a tree of known size, so the test does not depend on how large this checkout is;
    benchmarks/gpu_wheels.sh stops with the same message when the real tree leaves too little room."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("needs git (the tree is what git lists)")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_parts

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored.bin\n")
    for name, mib in (("tracked.bin", 10), ("untracked.bin", 5), ("ignored.bin", 30)):
        (tmp_path / name).write_bytes(b"\0" * (mib << 20))
    subprocess.run(["git", "-C", str(tmp_path), "add", "tracked.bin", ".gitignore"], check=True)
    tree = gpu_parts.tree_bytes(tmp_path)
    assert tree == (15 << 20) + len("ignored.bin\n")  # the ignored file is not sent
    part = gpu_parts.part_bytes(tmp_path)
    room = gpu_parts.CALL_LIMIT - tree - gpu_parts.MARGIN
    assert part % (1 << 20) == 0 and room - (1 << 20) < part <= room  # the largest whole MiB that fits
    plan = gpu_parts.plan(7, tmp_path)
    assert f"parts of {part >> 20} MiB; 7 device calls" in plan
    assert "call 7: carry ['.gpuwheels/7']" in plan and plan.rstrip().endswith("bash benchmarks/gpu.sh")
    (tmp_path / "untracked.bin").write_bytes(b"\0" * (45 << 20))  # now 55 MiB: less than MIN_PART left per call
    with pytest.raises(SystemExit, match="Make the tracked tree smaller"):
        gpu_parts.part_bytes(tmp_path)


def test_a_missing_wheel_part_stops_the_run_at_once(tmp_path):
    """Parts reach the GPU machine one call each; if it went cold between calls, the earlier ones are gone."""
    (tmp_path / "gw").mkdir()
    (tmp_path / "gw" / "part.2").write_bytes(b"second half")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "TOPV_GPU_WHEELS": str(tmp_path / "gw"),
           "TOPV_GPU_SITE": str(tmp_path / "site")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--device", "cpu", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "wheel part 1 of 2 is missing" in proc.stderr
    assert not (tmp_path / "site").exists()


def test_the_wheel_packer_never_replaces_a_folder_that_is_not_its_own(tmp_path):
    """GPU_WHEELS_DIR pointed at a user's folder: refused before any download, the folder left as it was."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_wheels.sh")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "GPU_WHEELS_DIR": str(folder)}, timeout=60)
    assert proc.returncode == 2 and "not replacing it" in proc.stderr
    assert (folder / "notes.txt").read_text() == "keep me"
