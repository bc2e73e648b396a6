"""``topv-bench``: what pruning buys on this machine, per stage, next to transformers, in one run.

For each keep budget (one export each, built from the source checkpoint and cached in ``work_dir``) and
each backend, the harness runs warm-ups and then measured generations of exactly ``new_tokens`` tokens
on a prompt of ``prompt_tokens`` tokens. ``--baseline hf`` adds transformers' eager ``generate()`` (and
``hf-static``: its static cache with automatic compilation) on the same model and inputs, in the same
process, so ratios compare like with like.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topv.errors import ConfigError, InputError
from topv.memory import release_device_memory
from topv.profiling.harness import measure

log = logging.getLogger("topv.bench")


@dataclass
class BenchOptions:
    backends: list[str] = field(default_factory=lambda: ["ort-cpu"])
    keeps: list[int | None] | None = None  # None: benchmark OUT_DIR as exported
    prompt_tokens: int | None = None
    new_tokens: int = 32
    repeats: int = 5
    warmup: int = 2
    baselines: list[str] = field(default_factory=list)  # "hf", "hf-static"
    threads: int | None = None
    device: str | None = None
    work_dir: Path = Path("artifacts/bench")
    model_shape: str | None = None
    dtype: str = "fp32"
    layer: int = 2
    image: str | None = None
    seed: int = 0
    quantize: list[str | None] = field(default_factory=lambda: [None])  # None and/or "int8", one export each
    kept_set: str = "float32"  # for the quantized exports: topv.precision (follow: vision and layers 0..K int8 too)
    image_size: tuple[int, int] | None = None  # for models whose token count follows the image size (Qwen2-VL)
    isolate: bool = False  # measure each export and backend in its own process (peak RSS of that backend alone)
    op_profile: Path | None = None  # after the timed runs, one profiled request per ONNX Runtime backend and export
    on_run: Any = None  # called with the list of finished runs after each one (a caller saving partial results)

    def __post_init__(self) -> None:
        for b in self.baselines:
            if b not in ("hf", "hf-static"):
                raise ConfigError(f"--baseline takes hf and/or hf-static; got {b!r}.")
        from topv.precision import check_kept_set

        check_kept_set(self.kept_set)
        if self.repeats < 1 or self.warmup < 0 or self.new_tokens < 2:
            raise ConfigError("--repeats must be >= 1, --warmup >= 0 and --new-tokens >= 2.")
        from topv.runtime.backends import backend_class
        from topv.runtime.backends.base import BackendOptions

        for spec in self.backends:
            name, extra = backend_spec(spec)
            backend_class(name).check_options(BackendOptions(**extra))  # before any export is built


# ---------------------------------------------------------------------- inputs
def make_prompt(processor: Any, image: Any, target_tokens: int | None) -> str:
    """A question whose encoded prompt (visual tokens and template included) has ``target_tokens`` tokens.

    Repeats a filler word that encodes to exactly one token; with no target, a short question.
    """
    base = "Describe the image ."
    if not target_tokens:
        return base

    def length(text: str) -> int:
        return int(processor.encode(image, text)["input_ids"].shape[1])

    start = length("x")
    if target_tokens < start:
        raise InputError(f"--prompt-tokens {target_tokens} is below the {start} tokens an image and a one-word question take.")
    for filler in ("the", "x", "a", "w0", "w1"):
        if length(" ".join([filler] * 3)) - length(filler) == 2:
            break
    else:  # pragma: no cover - every tokenizer we know has a one-token filler
        raise InputError("Could not find a one-token filler word to build a prompt of the requested length.")
    words = target_tokens - start + 1
    text = " ".join([filler] * words)
    got = length(text)
    if got != target_tokens:
        raise InputError(f"Built a prompt of {got} tokens for --prompt-tokens {target_tokens}; choose another length.")
    return text


def _export_for(source: Path, keep: int | None, options: BenchOptions, max_prompt: int, quantize: str | None = None) -> Path:
    """The export of ``source`` at ``keep`` (cached in the work dir, keyed by the checkpoint and every option)."""
    from topv.export.cache import cached_export
    from topv.export.exporter import ExportOptions

    return cached_export(source, options.work_dir / "exports", ExportOptions(
        keep=keep, layer=options.layer, dtype=options.dtype, max_prompt_tokens=max_prompt, max_new_tokens=options.new_tokens,
        validate_tokens=4, threads=options.threads, device=options.device or "cpu", quantize=quantize,
        kept_set=options.kept_set if quantize else "float32", image_size=options.image_size))


def _model_for_shape(shape: str, work_dir: Path, seed: int, dtype: str = "fp32") -> Path:
    from topv.testing import llava, qwen

    shapes = {**llava.SHAPES, **qwen.SHAPES}
    if shape not in shapes:
        raise ConfigError(f"Unknown --model-shape {shape!r}; known: {', '.join(shapes)}.")
    out = work_dir / "models" / f"{shape}-seed{seed}-{dtype}"
    if not (out / "config.json").is_file():
        import torch

        log.info("building a random-weight %s model in %s", shape, out)
        save = qwen.save_random_qwen if shape in qwen.SHAPES else llava.save_random_llava
        save(out, shape, seed=seed, dtype=torch.float16 if dtype == "fp16" else None)
    return out


# ---------------------------------------------------------------------- environment
def _on_gpu(device: str | None) -> bool:
    return bool(device) and str(device).startswith("cuda")


def _device_index(device: str | None) -> int:
    text = str(device or "cuda")
    return int(text.split(":")[1]) if ":" in text else 0


def device_info(device: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu": _cpu_name(), "cpu_count": os.cpu_count()}
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    try:
        import torch

        if torch.cuda.is_available():
            idx = torch.device(device or "cuda").index or 0
            info["gpu"] = torch.cuda.get_device_name(idx)
            info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(idx)))
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------- the benchmark
@dataclass
class BenchInputs:
    """What every measured run shares: the checkpoint, its geometry and processor, the image and the prompt."""

    source: Path
    spec: Any
    processor: Any
    image: Any
    prompt: str
    prompt_tokens: int
    max_prompt: int  # the exports' --max-prompt-tokens


def prepare(out_dir: str | Path | None, options: BenchOptions) -> BenchInputs:
    """The checkpoint (built for ``--model-shape``, or the export's source), the image and a prompt of the asked length."""
    from topv.artifact.manifest import read_manifest
    from topv.export.exporter import sample_scene
    from topv.families import family_for_config, read_model_config
    from topv.inputs import load_image

    if options.model_shape:
        source = _model_for_shape(options.model_shape, options.work_dir, options.seed, options.dtype)
    elif out_dir is not None:
        source = Path(read_manifest(out_dir).model_source)
    else:
        raise ConfigError("Give an export folder OUT_DIR or --model-shape NAME.")
    raw = read_model_config(source)
    family = family_for_config(raw)
    spec = family.spec(raw, options.image_size or family.default_image_hw(raw, source))
    processor = family.processor_for(family.load_processor(source), spec)
    image = load_image(options.image) if options.image else sample_scene(max(max(spec.image_hw), 64))
    prompt = make_prompt(processor, image, options.prompt_tokens)
    prompt_len = int(processor.encode(image, prompt)["input_ids"].shape[1])
    return BenchInputs(source, spec, processor, image, prompt, prompt_len, max(prompt_len, spec.num_visual_tokens + 64))


def run_bench(out_dir: str | Path | None, options: BenchOptions) -> dict[str, Any]:
    from topv.versions import library_versions

    inputs = prepare(out_dir, options)
    keeps = options.keeps if options.keeps is not None or out_dir is not None else [None]
    from topv.memory import device_used_probe

    probe = device_used_probe(_device_index(options.device))[0] if _on_gpu(options.device) else None
    runs: list[dict[str, Any]] = []
    exports = []
    for q, keep in [(None, None)] if keeps is None else [(q, k) for q in options.quantize for k in keeps]:
        # each export measured as soon as it exists: a later export that fails leaves the runs before it
        exports.append(Path(out_dir) if keeps is None else _export_for(inputs.source, keep, options, inputs.max_prompt, q))
        _measure_export(exports[-1], inputs, options, probe, runs)
    profiles = _op_profiles(exports, inputs, options) if options.op_profile else None
    if options.baselines:
        _hf_baselines(inputs.source, inputs.processor, inputs.image, inputs.prompt, options, probe, runs)
    result = {
        "meta": {
            "command": " ".join(sys.argv), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": device_info(options.device), "versions": library_versions(),
            "model": {"source": str(inputs.source), "shape": options.model_shape, "spec": inputs.spec.to_json()},
            "dtype": options.dtype, "layer": options.layer, "batch": 1, "prompt_tokens": inputs.prompt_tokens,
            "new_tokens": options.new_tokens, "repeats": options.repeats, "warmup": options.warmup, "threads": options.threads,
        },
        "runs": runs,
    }
    result["ratios"] = ratios(runs)
    if profiles is not None:
        result["op_profiles"] = profiles
    return result


def _op_profiles(exports: list[Path], inputs: BenchInputs, options: BenchOptions) -> dict[str, Any]:
    """One profiled request per export and ONNX Runtime backend, under ``options.op_profile/<label>/``
    (separate from the timed runs: profiling slows every node down)."""
    from topv.artifact.manifest import read_manifest
    from topv.profiling.op_profile import PROVIDERS, profile_export

    out: dict[str, Any] = {}
    for folder in exports:
        manifest = read_manifest(folder)
        for spec in options.backends:
            label = _run_name(manifest, spec)
            if label is None or backend_spec(spec)[0] not in PROVIDERS:
                continue
            log.info("profiling %s (one request, ONNX Runtime's per-node trace)", label)
            folder_name = label.replace(":", "-").replace(" ", "-").replace("=", "-")
            summary = profile_export(folder, spec, Path(options.op_profile) / folder_name, inputs.image, inputs.prompt,
                                     new_tokens=options.new_tokens, device=options.device, threads=options.threads)
            out[label] = {"folder": str(Path(options.op_profile) / folder_name), "wall_ms": summary["wall_ms"],
                          "fallback_nodes": summary["fallback_nodes"],  # a count
                          "memcpy_nodes_per_request": summary["memcpy_nodes_per_request"],
                          "graphs": {g: {"wall_ms": s["wall_ms"], "runs": s["runs"], "top_ops": s["ops"][:5],
                                         "fallback_count": s["fallback_count"], "fallback_nodes": s["fallback_nodes"][:10]}
                                     for g, s in summary["graphs"].items()},
                          **({"device_kernels": summary["device_kernels"]} if "device_kernels" in summary else {})}
    return out


BACKEND_OPTIONS = {"f32": ("precision", "f32"), "bf16": ("precision", "bf16"), "f16": ("precision", "f16"),
                   "auto": ("precision", "auto"), "int8": ("weights", "int8"), "low-memory": ("low_memory", True)}


def backend_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``openvino:bf16:int8`` -> ``("openvino", {"precision": "bf16", "weights": "int8"})``.

    Raises:
        ConfigError: an unknown backend or option.
    """
    from topv.runtime.backends import BACKENDS

    name, *opts = text.split(":")
    if name not in BACKENDS:
        raise ConfigError(f"--backend {text!r}: unknown backend {name!r}; choose from {', '.join(BACKENDS)}.")
    unknown = [o for o in opts if o not in BACKEND_OPTIONS]
    if unknown:
        raise ConfigError(f"--backend {text!r}: unknown option(s) {unknown}; options are {', '.join(BACKEND_OPTIONS)} "
                          "(e.g. openvino:bf16:int8, ort-cpu:low-memory).")
    return name, dict(BACKEND_OPTIONS[o] for o in opts)


def _run_name(manifest: Any, spec: str) -> str | None:
    """``ort-cpu int8 keep=64``: what a backend spec runs on an export, or None where it does not run it (int8
    MatMulInteger graphs are for ONNX Runtime's CPU provider)."""
    quantization = manifest.quantization or {}
    keep, weights = manifest.pruning.keep, quantization.get("weights")
    if weights and backend_spec(spec)[0] != "ort-cpu":
        return None
    if weights and quantization.get("kept_set") == "follow":
        weights += " kept-set=follow"
    return f"{spec}{' ' + weights if weights else ''} keep={keep if keep is not None else 'all'}"


def _finished(runs: list[dict[str, Any]], run: dict[str, Any] | None, options: BenchOptions) -> None:
    if run is not None:
        runs.append(run)
        if options.on_run is not None:
            options.on_run(list(runs))


def _measure_export(folder: Path, inputs: BenchInputs, options: BenchOptions, probe: Any, runs: list[dict[str, Any]]) -> None:
    """Every backend of ``options`` on one export (each in its own process with ``options.isolate``), into ``runs``."""
    for spec in options.backends:
        if options.isolate:
            if backend_spec(spec)[1].get("weights"):
                _in_child(_load_once, folder, spec, inputs.source, options)  # NNCF's compression, cached, is not measured
            run = _in_child(_measure_one, folder, spec, inputs, options, None)
        else:
            run = _measure_one(folder, spec, inputs, options, probe)
        _finished(runs, run, options)


def _in_child(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a fresh (spawned) process; a child that dies (out of memory, a crash) is a typed error."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from topv.errors import TopvError

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool as exc:
            raise TopvError(f"the measuring process for {args[1]!r} on {args[0]} died ({exc}); it may have run out of "
                            "memory: measure fewer backends at a time or free memory.") from None


def _open(folder: Path, spec: str, source: Path, options: BenchOptions) -> Any:
    from topv.runtime.pipeline import Pipeline

    backend, extra = backend_spec(spec)
    return Pipeline.load(folder, backend, threads=options.threads, device=options.device, verify_checksums=False,
                         model_dir=source, **extra)


def _load_once(folder: Path, spec: str, source: Path, options: BenchOptions) -> None:
    _open(folder, spec, source, options).backend.close()


def _measure_one(folder: Path, spec: str, inputs: BenchInputs, options: BenchOptions, probe: Any) -> dict[str, Any] | None:
    from topv.artifact.manifest import read_manifest
    from topv.memory import host_rss
    from topv.profiling.runners import PipelineRunner

    if options.isolate:
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # a spawned child starts without handlers
        if _on_gpu(options.device):
            from topv.memory import device_used_probe

            probe = device_used_probe(_device_index(options.device))[0]
    extra = backend_spec(spec)[1]
    manifest = read_manifest(folder)
    name = _run_name(manifest, spec)
    if name is None:
        return None
    keep, weights, label = manifest.pruning.keep, (manifest.quantization or {}).get("weights"), f"topv {name}"
    log.info("measuring %s (%d warm-up, %d runs)", label, options.warmup, options.repeats)
    rss_before = host_rss()
    t0 = time.perf_counter()
    pipe = _open(folder, spec, inputs.source, options)
    load_s = time.perf_counter() - t0
    runner = PipelineRunner(pipe, inputs.image, inputs.prompt, options.new_tokens, label)
    m = measure(runner, warmup=options.warmup, repeats=options.repeats, gpu_probe=probe)
    run = {
        "label": label, "kind": "topv", "backend": spec, "keep": keep, "weights": extra.get("weights") or weights or manifest.dtype,
        "export": str(folder), "prompt_tokens": runner.last.prompt_length, "kept_prompt_tokens": runner.last.kept_length,
        "new_tokens": len(runner.last.token_ids), "stats": m.stats(), "kv_cache_bytes": manifest.kv.nbytes,
        "kv_cache_bytes_unpruned": manifest.kv.nbytes_unpruned, "peak_host_rss_bytes": m.peak_host_rss_bytes,
        "host_rss_before_load_bytes": rss_before, "peak_gpu_bytes": m.peak_gpu_bytes, "load_s": load_s,
        "warmup_s": m.warmup_seconds, "isolated": options.isolate,
    }
    if options.isolate:
        from topv.memory import peak_rss_since_exec

        run["process_peak_rss_bytes"] = peak_rss_since_exec()  # this process held only this backend
    pipe.backend.close()
    del pipe, runner
    release_device_memory(_on_gpu(options.device))
    return run


def _hf_baselines(source: Path, processor: Any, image: Any, prompt: str, options: BenchOptions, probe: Any,
                  runs: list[dict[str, Any]]) -> None:
    import torch

    from topv.profiling.runners import HFGenerateRunner
    from topv.reference.loading import load_model

    if options.threads:
        torch.set_num_threads(options.threads)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if options.dtype == "fp16" else torch.float32
    model, _ = load_model(source, dtype=dtype, device=device)
    def encode() -> dict[str, Any]:
        tensors = {k: torch.from_numpy(v).to(device) for k, v in processor.encode(image, prompt).items()}
        tensors["pixel_values"] = tensors["pixel_values"].to(dtype)
        return tensors

    inputs = encode()
    for name in options.baselines:
        label = "transformers eager" if name == "hf" else "transformers static+compile"
        log.info("measuring %s", label)
        runner = HFGenerateRunner(model, inputs, options.new_tokens, label, static=name == "hf-static", encode=encode)
        m = measure(runner, warmup=options.warmup, repeats=options.repeats, gpu_probe=probe)
        _finished(runs, {"label": label, "kind": name, "backend": "transformers", "keep": None,
                         "prompt_tokens": int(inputs["input_ids"].shape[1]), "stats": m.stats(),
                         "peak_host_rss_bytes": m.peak_host_rss_bytes, "peak_gpu_bytes": m.peak_gpu_bytes,
                         "warmup_s": m.warmup_seconds}, options)
    del model
    release_device_memory(_on_gpu(options.device))


def _p50(run: dict[str, Any], stage: str) -> float | None:
    s = run["stats"].get(stage)
    return s["p50_ms"] if s else None


def ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups (p50) of every topv run against transformers eager / static, and of keeps against keep=all."""
    out: dict[str, Any] = {}
    by_kind = {r["kind"]: r for r in runs if r["kind"] in ("hf", "hf-static")}
    for run in runs:
        if run["kind"] != "topv":
            continue
        entry: dict[str, Any] = {}
        for kind, base in by_kind.items():
            for stage in ("total", "ttft", "prefill", "vision"):
                a, b = _p50(run, stage), _p50(base, stage)
                if a and b:
                    entry[f"{stage}_speedup_vs_{kind}"] = b / a
        full = next((r for r in runs if r["kind"] == "topv" and r["backend"] == run["backend"] and r["keep"] is None
                     and r.get("weights") == run.get("weights")), None)
        if full is not None and full is not run:
            for stage in ("prefill", "total", "ttft"):
                a, b = _p50(run, stage), _p50(full, stage)
                if a and b:
                    entry[f"{stage}_speedup_vs_keep_all"] = b / a
            entry["kv_bytes_vs_unpruned"] = run["kv_cache_bytes"] / run["kv_cache_bytes_unpruned"]
        out[run["label"]] = entry
    return out


def table(result: dict[str, Any]) -> str:
    """A plain-text table of p50 latencies (ms), throughput, KV size and peak RSS (MB; the process's own with --isolate)."""
    head = (f"{'run':38s} {'vision':>8s} {'prefill':>8s} {'prune':>7s} {'TTFT':>8s} {'dec/tok':>8s} {'e2e':>9s} {'tok/s':>7s} "
            f"{'KV MB':>7s} {'RSS MB':>7s}")
    lines = [head, "-" * len(head)]
    for run in result["runs"]:
        def cell(stage: str, width: int, digits: int = 1) -> str:
            v = _p50(run, stage)
            return f"{v:{width}.{digits}f}" if v is not None else f"{'-':>{width}s}"

        total = _p50(run, "total")
        tps = (run.get("new_tokens") or result["meta"]["new_tokens"]) / (total / 1e3) if total else None
        kv = run.get("kv_cache_bytes")
        rss = run.get("process_peak_rss_bytes") or run.get("peak_host_rss_bytes")
        lines.append(
            f"{run['label']:38s} {cell('vision', 8)} {cell('prefill', 8)} {cell('prune', 7, 2)} {cell('ttft', 8)} "
            f"{cell('decode_per_token', 8, 2)} {cell('total', 9)} "
            f"{(f'{tps:7.1f}' if tps else '      -')} {(f'{kv / 1e6:7.1f}' if kv else '      -')} "
            f"{(f'{rss / 1e6:7.0f}' if rss else '      -')}"
        )
    for label, entry in result.get("ratios", {}).items():
        if entry:
            lines.append(f"{label}: " + ", ".join(f"{k} {v:.2f}" for k, v in entry.items()))
    return "\n".join(lines)
