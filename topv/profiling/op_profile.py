"""Where the time goes inside each graph: ONNX Runtime's per-node traces of one request, summarized.

:func:`profile_export` opens an export with profiling on (``Pipeline.load(profile_dir=...)``), runs
``requests`` identical requests (eos ignored, so every request runs every graph equally often) and
summarizes the last one per graph: the wall time of its runs, time per operator type and per execution
provider, the nodes that ran on another provider than the backend's own (on ``ort-cuda``: fallbacks to the
CPU provider) and the ``Memcpy`` nodes ONNX Runtime inserted (host <-> device copies inside a graph).

On the CUDA provider a node's time in ONNX Runtime's trace is host time (launching its kernels, and waiting
where a kernel synchronizes), not device time. On a CUDA device :func:`profile_export` therefore also records
the last request under torch's profiler (CUPTI sees every kernel in the process, ONNX Runtime's included)
and lists the device kernels by time.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

log = logging.getLogger("topv.profile")

PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider"}
MARKER = ".topv-profile"  # a folder topv writes profiles to; others it refuses to write into unless empty


def read_trace(path: str | Path) -> tuple[list[tuple[int, int]], list[dict[str, Any]]]:
    """``(runs, nodes)`` of one ONNX Runtime trace: each ``model_run`` as ``(start_us, duration_us)`` in order,
    and each node's kernel event (``name``, ``op``, ``provider``, ``ts``, ``dur``)."""
    events = json.loads(Path(path).read_text())
    runs = sorted((int(e["ts"]), int(e["dur"])) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = [{"name": e["name"][: -len("_kernel_time")], "op": e.get("args", {}).get("op_name", "?"),
              "provider": e.get("args", {}).get("provider", "?"), "ts": int(e["ts"]), "dur": int(e["dur"])}
             for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    return runs, nodes


def summarize_graph(path: str | Path, requests: int, provider: str) -> dict[str, Any]:
    """One graph's trace, reduced to the runs of the last of ``requests`` identical requests.

    Raises:
        ValueError: the trace's run count is not a multiple of ``requests`` (the requests differed).
    """
    runs, nodes = read_trace(path)
    if not runs or len(runs) % requests:
        raise ValueError(f"{Path(path).name}: {len(runs)} runs cannot be {requests} identical requests")
    last = runs[-(len(runs) // requests):]
    mine = [nd for nd in nodes if any(ts <= nd["ts"] <= ts + dur for ts, dur in last)]
    per_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    per_provider: dict[str, float] = defaultdict(float)
    fallback: dict[str, dict[str, Any]] = {}
    for nd in mine:
        ms = nd["dur"] / 1e3
        per_op[nd["op"]][0] += ms
        per_op[nd["op"]][1] += 1
        per_provider[nd["provider"]] += ms
        if nd["provider"] != provider:
            entry = fallback.setdefault(nd["name"], {"node": nd["name"], "op": nd["op"], "provider": nd["provider"], "ms": 0.0})
            entry["ms"] += ms
    node_ms = sum(v[0] for v in per_op.values())
    wall_ms = sum(dur for _, dur in last) / 1e3
    memcpy = [v for op, v in per_op.items() if op.startswith("Memcpy")]
    return {
        "runs": len(last), "wall_ms": wall_ms, "wall_ms_per_run": wall_ms / len(last), "node_ms": node_ms,
        "ops": [{"op": op, "ms": ms, "share": ms / node_ms if node_ms else 0.0, "nodes_per_run": count / len(last)}
                for op, (ms, count) in sorted(per_op.items(), key=lambda kv: -kv[1][0])],
        "providers": dict(per_provider), "expected_provider": provider,
        "fallback_count": len(fallback), "fallback_nodes": sorted(fallback.values(), key=lambda f: -f["ms"])[:100],
        "memcpy": {"nodes_per_run": sum(v[1] for v in memcpy) / len(last), "ms": sum(v[0] for v in memcpy)},
        "trace": Path(path).name,
    }


def summarize(files: dict[str, Path], requests: int, provider: str) -> dict[str, Any]:
    graphs = {g: summarize_graph(p, requests, provider) for g, p in files.items()}
    return {"graphs": graphs, "wall_ms": sum(g["wall_ms"] for g in graphs.values()),
            "fallback_nodes": sum(g["fallback_count"] for g in graphs.values()),
            "memcpy_nodes_per_request": sum(g["memcpy"]["nodes_per_run"] * g["runs"] for g in graphs.values())}


def prepare_profile_dir(path: str | Path, inputs: list[Any]) -> Path:
    """A folder for profiles: created, or empty, or one topv wrote profiles to; never an input or inside one.

    Raises:
        OutputExistsError: it is an input, lies inside an input folder, or holds files topv did not write.
    """
    from topv.cli.outputs import refuse_inputs
    from topv.errors import OutputExistsError

    path = Path(path)
    refuse_inputs(path, inputs, "--op-profile")
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / MARKER).is_file())):
        raise OutputExistsError(f"--op-profile {str(path)!r} exists and is not an empty folder or one topv wrote profiles "
                                "to; choose a new folder.")
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("topv op profiles\n")
    return path


def profile_export(folder: str | Path, backend: str, out_dir: str | Path, image: Any, prompt: str, *, new_tokens: int = 8,
                   requests: int = 2, device: str | None = None, threads: int | None = None,
                   cuda_graph: bool = False) -> dict[str, Any]:
    """Profile one request of ``folder`` on ``backend`` (``ort-cpu``/``ort-cuda``, options as in ``topv-bench``);
    writes the traces, ``profile.json`` and (with matplotlib) ``profile.png`` under ``out_dir``; returns the summary."""
    from topv.cli.outputs import write_json
    from topv.profiling.bench import backend_spec
    from topv.runtime.pipeline import Pipeline

    name, extra = backend_spec(backend)
    if name not in PROVIDERS:
        from topv.errors import ConfigError

        raise ConfigError(f"operator profiles come from ONNX Runtime: backend ort-cpu or ort-cuda, not {backend!r}.")
    out_dir = Path(out_dir)
    pipe = Pipeline.load(folder, name, device=device, threads=threads, verify_checksums=False, cuda_graph=cuda_graph,
                         profile_dir=out_dir / "traces", **extra)
    on_gpu = name == "ort-cuda" and str(device or "cuda").startswith("cuda")
    kernels: dict[str, Any] | None = None
    try:
        for i in range(requests):
            if on_gpu and i == requests - 1:
                result, kernels = _with_device_kernels(lambda: _request(pipe, image, prompt, new_tokens), out_dir)
            else:
                result = _request(pipe, image, prompt, new_tokens)
        files = pipe.backend.end_profiling()
    finally:
        pipe.backend.close()
    provider = PROVIDERS["ort-cuda" if on_gpu else "ort-cpu"]  # ort-cuda on device="cpu" runs the CPU provider
    summary = {"export": str(folder), "backend": backend, "device": device or ("cuda:0" if name == "ort-cuda" else "cpu"),
               "requests": requests, "new_tokens": new_tokens, "prompt_tokens": result.prompt_length,
               "kept_prompt_tokens": result.kept_length, "request_timings_ms": result.timings_ms(),
               **summarize(files, requests, provider)}
    if kernels is not None:
        summary["device_kernels"] = kernels
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:  # the plot extra; the summary stands without it
        log.info("matplotlib is not installed (pip install 'topv[plot]'): no profile.png; plot later from profile.json")
    else:
        from topv.profiling.plot import plot_op_profile

        plot_op_profile(summary, out_dir / "profile.png")
    write_json(out_dir / "profile.json", summary)
    return summary


def _request(pipe: Any, image: Any, prompt: str, new_tokens: int) -> Any:
    return pipe.generate(image, prompt, max_new_tokens=new_tokens, ignore_eos=True)


def _with_device_kernels(fn: Any, out_dir: Path) -> tuple[Any, dict[str, Any]]:
    """``fn()`` under torch's profiler with CUDA activity: the device kernels by total time (CUPTI records every
    kernel of the process, ONNX Runtime's too). Its failure is recorded, not raised: the ONNX Runtime summary stands."""
    import torch

    try:
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
        prof.start()
    except Exception as exc:  # noqa: BLE001 - a profiler that cannot start must not cost the request
        return fn(), {"error": f"{type(exc).__name__}: {exc}"}
    try:
        result = fn()
        torch.cuda.synchronize()
    finally:
        prof.stop()
    try:
        prof.export_chrome_trace(str(out_dir / "device_kernels.trace.json"))
        rows = []
        for e in prof.key_averages():
            us = getattr(e, "self_device_time_total", None)
            us = getattr(e, "self_cuda_time_total", 0) if us is None else us
            if us:
                rows.append({"kernel": e.key[:160], "ms": us / 1e3, "calls": e.count})
        rows.sort(key=lambda r: -r["ms"])
        return result, {"total_ms": sum(r["ms"] for r in rows), "kernels": len(rows), "top": rows[:25]}
    except Exception as exc:  # noqa: BLE001 - see above
        return result, {"error": f"{type(exc).__name__}: {exc}"}


def table(summary: dict[str, Any], top: int = 4) -> str:
    """Per graph: runs, wall ms of the request, its largest operator types, fallbacks and copies."""
    lines = [f"{'graph':<14}{'runs':>5}{'wall ms':>10}  top operators (ms, share)"]
    for g, s in summary["graphs"].items():
        ops = ", ".join(f"{o['op']} {o['ms']:.2f} ({o['share']:.0%})" for o in s["ops"][:top])
        flags = (f"  [{s['fallback_count']} nodes off {s['expected_provider']}]" if s["fallback_count"] else "") + (
            f"  [{s['memcpy']['nodes_per_run']:.0f} Memcpy/run]" if s["memcpy"]["nodes_per_run"] else "")
        lines.append(f"{g:<14}{s['runs']:>5}{s['wall_ms']:>10.2f}  {ops}{flags}")
    k = summary.get("device_kernels")
    if k:
        lines.append("device kernels: " + (k["error"] if "error" in k else
                     f"{k['total_ms']:.2f} ms in {k['kernels']} kinds; top: " +
                     ", ".join(f"{r['kernel'][:40]} {r['ms']:.2f}" for r in k["top"][:3])))
    return "\n".join(lines)
