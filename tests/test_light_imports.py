"""``import topv`` and every console script's ``--help`` work without heavy optional libraries."""

import subprocess
import sys
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("transformers", "onnxruntime", "tensorrt", "onnx", "torch", "polygraphy", "matplotlib", "openvino", "nncf")

BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError(f'blocked for this test: {{name}}')
        return None
sys.meta_path.insert(0, Block())
"""


def _scripts():
    # Read [project.scripts] without tomllib (Python 3.10 has none): one `name = "module:function"` per line.
    text = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+:\w+)"', text, flags=re.M))


def _run(code):
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_import_topv_without_heavy_libraries():
    proc = _run(
        "import topv, topv.runtime, topv.export, topv.pruning, topv.artifact.manifest, topv.families, topv.spec\n"
        "import topv.runtime.pipeline, topv.runtime.chain, topv.runtime.backends, topv.runtime.backends.base\n"
        "import topv.runtime.backends.ort.backend, topv.runtime.backends.trt.backend, topv.engines.check, topv.cli.outputs\n"
        "import topv.runtime.backends.openvino.backend, topv.artifact.external, topv.evaluation.agreement\n"
        "from topv import TopVConfig\n"
        "print(TopVConfig().iterations, topv.__version__)\n"
        f"assert not any(m.split('.')[0] in {BLOCKED!r} for m in sys.modules)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "3"


@pytest.mark.parametrize("script", sorted(_scripts()))
def test_help_without_heavy_libraries(script):
    target = _scripts()[script]
    module, func = target.split(":")
    proc = _run(
        f"import sys\nsys.argv = [{script!r}, '--help']\nfrom {module} import {func}\n"
        f"try:\n    {func}()\nexcept SystemExit as e:\n    sys.exit(e.code)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"usage: {script}" in proc.stdout


def test_missing_backend_library_is_a_clear_error():
    proc = _run(
        "from topv.runtime.backends.ort.session import import_onnxruntime\n"
        "from topv.errors import BackendUnavailableError\n"
        "try:\n    import_onnxruntime()\nexcept BackendUnavailableError as e:\n    print(e)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install onnxruntime" in proc.stdout
