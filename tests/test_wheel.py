"""The wheel holds only product: the topv package, no training, synthetic-task, real-weights or research code."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_product(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("topv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"topv", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    modules = [n for n in names if n.endswith(".py")]
    for word in ("train", "shapes", "realistic", "writer", "sweep", "demo", "compare_configs"):
        assert not [m for m in modules if word in Path(m).stem], (word, modules)
    for expected in ("topv/families/llava.py", "topv/runtime/chain.py", "topv/runtime/backends/base.py", "topv/artifact/manifest.py"):
        assert expected in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    assert {"topv-export", "topv-run", "topv-bench", "topv-eval", "topv-build", "topv-check"} <= set(
        line.split(" =")[0] for line in scripts.splitlines() if " = " in line)
