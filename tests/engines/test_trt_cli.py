"""The CLIs without TensorRT (and without torch/onnx/onnxruntime for --help)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("transformers", "onnxruntime", "tensorrt", "onnx", "torch", "polygraphy")
BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in BLOCKED_NAMES:
            raise ImportError(f'blocked for this test: {name}')
        return None
sys.meta_path.insert(0, Block())
"""
SCRIPTS = {"topv-build": "topv.engines.build_cli", "topv-check": "topv.engines.check_cli"}


def _run(code, blocked=HEAVY):
    return subprocess.run(
        [sys.executable, "-c", f"BLOCKED_NAMES = {tuple(blocked)!r}\n" + BLOCKER + code],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_without_heavy_libraries(script):
    proc = _run(
        f"import sys\nsys.argv = [{script!r}, '--help']\nfrom {SCRIPTS[script]} import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    sys.exit(e.code)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"usage: {script}" in proc.stdout


def test_import_topv_engines_is_light():
    proc = _run(
        "import topv.engines, topv.engines.check, topv.engines.build, topv.runtime.backends.trt.backend\n"
        "import topv.runtime.backends.trt.polygraphy, topv.engines.build_cli, topv.engines.check_cli\n"
        f"assert not any(m.split('.')[0] in {HEAVY!r} for m in sys.modules), sorted(sys.modules)\n",
        blocked=(),
    )
    assert proc.returncode == 0, proc.stderr


def test_build_without_tensorrt_is_a_clear_error(pruned_export):
    proc = _run(
        f"import sys\nfrom topv.engines.build_cli import main\nsys.exit(main([{str(pruned_export)!r}]))\n",
        blocked=("tensorrt",),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr
    assert "TensorRT is not installed" in err
    assert "--extra-index-url https://pypi.nvidia.com" in err and "JetPack" in err and "import tensorrt" in err
    assert not list(pruned_export.glob("*.engine"))


def test_check_without_tensorrt_or_torch(pruned_export):
    proc = _run(
        f"import sys\nfrom topv.engines.check_cli import main\nsys.exit(main([{str(pruned_export)!r}]))\n",
        blocked=("tensorrt", "torch", "onnxruntime", "transformers"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "result: OK" in proc.stdout
