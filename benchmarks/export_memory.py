"""Export memory: peak RSS and time per stage of ``topv-export`` on random-weight checkpoints of real shapes.

    .venv/bin/python benchmarks/export_memory.py --shape llava-edge-1b --dtype fp16 --keep 64 \
        --work /tmp/exmem --json benchmarks/results/export-memory.json

For each shape: (1) a checkpoint of random weights is built and saved in its own process (safetensors, at
``--dtype``, initialised in that dtype so that a 7B shape never exists in float32); (2) ``topv-export`` runs in
a child process while this one samples the child's RSS every 0.2 s and reads its stage lines; its peak RSS is the
kernel's high-water mark of the child (``ru_maxrss``), which counts every resident page, the memory-mapped
checkpoint's and weights.bin's included. The JSON has, per run: the weights' bytes (the checkpoint's
safetensors), the peak RSS and its ratio to them, the wall time, and each stage's time and highest sampled RSS.
Results are appended to ``--json`` (one entry per shape, dtype, keep, validate mode and label; a rerun replaces its
own); ``--plot`` draws every run's RSS curve (``docs/img/export-memory.png``). One export per process: the peak is the
largest child's. Run the shapes one after another on an otherwise idle machine (a 7B shape needs ~14 GB of RAM and
~30 GB of disk under ``--work``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = re.compile(r"\[(\d+)/(\d+)\] (.*)")


def build(shape: str, out: Path, dtype: str) -> None:
    """Save a random-weight checkpoint of ``shape`` at ``dtype`` (run in a child: its memory is freed)."""
    import torch

    from topv.testing import qwen
    from topv.testing.llava import build_random_llava

    torch.set_default_dtype(torch.float16 if dtype == "fp16" else torch.float32)
    if shape in qwen.SHAPES:
        model, processor = qwen.build_random_qwen(shape, seed=0)
    else:
        model, processor = build_random_llava(shape, seed=0)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="2GB")
    (processor.save if shape in qwen.SHAPES else processor.save_pretrained)(out)


def cpu_flags() -> dict[str, object]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {"model": model, "cores": os.cpu_count(), "amx": sorted(f for f in flags if f.startswith("amx")),
            "avx512_bf16": "avx512_bf16" in flags, "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def rss_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_export(model_dir: Path, out_dir: Path, extra: list[str]) -> dict[str, object]:
    """``topv-export`` in a child, its RSS sampled; returns the stages, the peak and the time."""
    cmd = [sys.executable, "-m", "topv.export.cli", str(model_dir), str(out_dir), "--force", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    stages: list[dict[str, object]] = []
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter() - t0, rss_of(child.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    log = []
    assert child.stderr is not None
    for line in child.stderr:
        log.append(line.rstrip())
        print(line.rstrip(), file=sys.stderr, flush=True)
        match = STAGE.search(line)
        if match:
            stages.append({"stage": match.group(3), "start_s": time.perf_counter() - t0})
    rc = child.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the largest child so far: run one export per process
    for i, stage in enumerate(stages):
        end = stages[i + 1]["start_s"] if i + 1 < len(stages) else wall
        stage["seconds"] = round(float(end) - float(stage["start_s"]), 1)  # type: ignore[arg-type]
        stage["max_sampled_rss_bytes"] = max((r for t, r in samples if stage["start_s"] <= t <= end), default=0)  # type: ignore[operator]
        stage["start_s"] = round(float(stage["start_s"]), 1)  # type: ignore[arg-type]
    step = max(1, len(samples) // 400)  # the RSS curve for the plot, at most ~400 points
    curve = [[round(t, 1), round(r / 2**30, 3)] for t, r in samples[::step]]
    return {"rc": rc, "wall_s": round(wall, 1), "peak_rss_bytes": peak, "stages": stages,
            "log_tail": log[-12:] if rc else [], "rss_curve_gib": curve}


def plot(runs: list[dict[str, object]], path: Path) -> None:
    """RSS over the export's time, one panel per shape, each run a line (thin vertical lines: the starts of its
    numbered stages); dashed: the weights and 1.5x of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(str(r["shape"]) + " " + str(r["dtype"]) for r in runs if r.get("rss_curve_gib")))
    fig, axes = plt.subplots(1, len(shapes), figsize=(6.5 * len(shapes), 4), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        mine = [r for r in runs if f"{r['shape']} {r['dtype']}" == shape and r.get("rss_curve_gib")]
        for r in mine:
            t, rss = zip(*r["rss_curve_gib"])  # type: ignore[arg-type]
            label = f"{str(r['label']).split(' (')[0]} (validate {r['validate']}): peak {int(r['peak_rss_bytes']) / 2**30:.1f} GiB"
            (line,) = ax.plot(t, rss, label=label)
            for i, stage in enumerate(r["stages"]):  # type: ignore[union-attr]
                ax.axvline(stage["start_s"], color=line.get_color(), alpha=0.25, lw=0.8)
                ax.annotate(str(i + 1), (stage["start_s"], 0), color=line.get_color(), fontsize=7)
        weights = int(mine[0]["weights_bytes"]) / 2**30
        ax.axhline(weights, color="gray", ls="--", lw=1, label=f"weights {weights:.1f} GiB")
        ax.axhline(1.5 * weights, color="red", ls=":", lw=1, label="1.5x weights")
        ax.set(title=f"topv-export {shape}, keep {mine[0]['keep']}", xlabel="seconds", ylabel="RSS (GiB)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="llava-edge-1b", help="a shape of topv.testing.llava.SHAPES or topv.testing.qwen.SHAPES")
    p.add_argument("--image-size", default=None, help="topv-export --image-size (Qwen shapes), e.g. 448x448")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp16")
    p.add_argument("--keep", default="64")
    p.add_argument("--layer", default="2")
    p.add_argument("--validate", default=None, help="topv-export --validate (default: the exporter's default)")
    p.add_argument("--work", type=Path, required=True, help="folder for the checkpoint and the export (tens of GB for 7B)")
    p.add_argument("--json", type=Path, default=None, help="append the result here")
    p.add_argument("--label", default="", help="what this run measures (e.g. the code version)")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--plot", type=Path, default=None, help="draw the RSS curves of every run in --json here")
    p.add_argument("--plot-only", action="store_true", help="only redraw --plot from --json")
    p.add_argument("--_build", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._build:
        build(a._build[0], Path(a._build[1]), a._build[2])
        return 0
    if a.plot_only:
        plot(json.loads(a.json.read_text())["runs"], a.plot)
        return 0
    ckpt = a.work / f"{a.shape}-{a.dtype}"
    if not (ckpt / "config.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--work", str(a.work), "--_build", a.shape, str(ckpt), a.dtype], check=True, cwd=ROOT)
        print(f"built {ckpt} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if a.build_only:
        return 0
    weights = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    extra = ["--dtype", a.dtype, "--keep", a.keep, "--layer", a.layer]
    if a.validate:
        extra += ["--validate", a.validate]
    if a.image_size:
        extra += ["--image-size", a.image_size]
    result = run_export(ckpt, a.work / f"{a.shape}-{a.dtype}-export", extra)
    entry = {"shape": a.shape, "dtype": a.dtype, "keep": a.keep, "layer": int(a.layer), "validate": a.validate or "default",
             "image_size": a.image_size,
             "label": a.label, "weights_bytes": weights, **result,
             "peak_over_weights": round(int(result["peak_rss_bytes"]) / weights, 2), "cpu": cpu_flags(),
             "command": " ".join(["benchmarks/export_memory.py", *sys.argv[1:]])}
    print(json.dumps({k: v for k, v in entry.items() if k != "stages"}, indent=1))
    for s in result["stages"]:  # type: ignore[union-attr]
        print(f"  {s['seconds']:7.1f} s  {s['max_sampled_rss_bytes'] / 2**30:6.2f} GiB  {s['stage']}")
    if a.json:
        runs = json.loads(a.json.read_text())["runs"] if a.json.is_file() else []
        key = lambda r: (r["shape"], r["dtype"], r["keep"], r["validate"], r["label"])  # noqa: E731
        runs = [r for r in runs if key(r) != key(entry)] + [entry]
        a.json.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
        if a.plot:
            plot(runs, a.plot)
    return int(result["rc"])  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
