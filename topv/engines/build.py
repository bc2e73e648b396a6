"""Building one TensorRT engine per graph of an export folder (tensorrt Python API, TensorRT >= 10).

For each graph: ``trt.Builder`` -> network (``STRONGLY_TYPED`` when the export carries its own fp16 types,
otherwise a weakly typed network with builder precision flags) -> ``trt.OnnxParser.parse_from_file`` (so
the shared external ``weights.bin`` resolves next to the ONNX file) -> builder config (workspace limit,
precision flags, optimization level, shared timing cache, one optimization profile over the manifest's
symbolic axes for the prefill graphs) -> ``build_serialized_network`` -> ``<graph>.engine``.

Engines are written to temporary files and renamed into place only when every graph has built; then
``engines.json`` (:mod:`topv.engines.engine_manifest`) is written atomically. Existing engines are only
replaced with ``force=True``. Planning (:func:`plan_build`) is plain Python and testable without TensorRT.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topv.engines.engine_manifest import (
    ENGINE_MANIFEST_NAME,
    EngineManifest,
    EngineRecord,
    GpuInfo,
    atomic_write_bytes,
    export_fingerprint,
    write_engine_manifest,
)
from topv.engines.errors import EngineBuildError
from topv.engines.profiles import GraphProfile, derive_profiles
from topv.engines.trt_import import make_logger
from topv.errors import ConfigError, OutputExistsError
from topv.precision import check_kept_set, float32_graphs

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "bf16", "fp32")


@dataclass(frozen=True)
class BuildOptions:
    """How to build.

    Attributes:
        precision: ``fp16``/``bf16``/``fp32`` for an fp32 export (default fp16); an fp16 export is built
            strongly typed from its own types (only ``fp16`` or None is accepted).
        workspace_gib: limit of TensorRT's workspace memory pool (None: TensorRT's default, the device memory).
        timing_cache: file to load the timing cache from (if it exists) and save it to afterwards.
        force: replace existing engines and ``engines.json``.
        opt_prompt_tokens: the prompt length the prefill profiles are tuned for (default: see profiles).
        optimization_level: ``builder_optimization_level`` 0..5 (None: TensorRT's default, 3).
        device: CUDA device index the engines are built on and for.
        verify_checksums: check the export's SHA-256s before building (sizes are always checked).
        static_check: run ``topv-check``'s static check first when the onnx package is installed.
        kept_set: ``float32`` (default): in a weakly typed build the graphs that decide the kept tokens (vision,
            prefill_head, prune) are built in fp32 whatever ``precision`` says; ``follow``: vision and prefill_head
            take ``precision`` too (prune stays fp32). See :mod:`topv.precision`.
    """

    precision: str | None = None
    workspace_gib: float | None = None
    timing_cache: str | Path | None = None
    force: bool = False
    opt_prompt_tokens: int | None = None
    optimization_level: int | None = None
    device: int = 0
    verify_checksums: bool = True
    static_check: bool = True
    kept_set: str = "float32"

    def __post_init__(self) -> None:
        check_kept_set(self.kept_set)
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}.")
        if self.workspace_gib is not None and not self.workspace_gib > 0:
            raise ConfigError(f"--workspace must be a positive number of GiB; got {self.workspace_gib}.")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise ConfigError(f"--opt-level must be between 0 and 5; got {self.optimization_level}.")

    @property
    def workspace_bytes(self) -> int | None:
        return None if self.workspace_gib is None else int(self.workspace_gib * 2**30)


@dataclass(frozen=True)
class GraphPlan:
    """What to build for one graph."""

    graph: str
    onnx: Path
    engine: Path
    precision: str
    profile: GraphProfile


@dataclass
class BuildPlan:
    """Everything decided before TensorRT is touched."""

    folder: Path
    precision: str
    strongly_typed: bool
    graphs: list[GraphPlan] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)  # outputs that a build replaces


def resolve_precision(export_dtype: str, requested: str | None) -> tuple[str, bool]:
    """``(precision, strongly_typed)`` for an export of ``export_dtype``.

    Raises:
        ConfigError: a precision other than fp16 was requested for an fp16 export.
    """
    if export_dtype == "fp16":
        if requested not in (None, "fp16"):
            raise ConfigError(
                f"This folder was exported with --dtype fp16: its graphs carry their own types (fp16 weights, float32 "
                f"norms, softmax and TopV solve), so the engines are built strongly typed and --precision {requested} "
                "cannot apply. Re-export with --dtype fp32 to build bf16 or fp32 engines."
            )
        return "fp16", True
    if export_dtype != "fp32":
        raise ConfigError(f"Unknown export dtype {export_dtype!r} in manifest.json; re-export the model.")
    return requested or "fp16", False


def graph_precision(graph: str, precision: str, strongly_typed: bool, float32: frozenset[str] = frozenset()) -> str:
    """The precision one graph is built with: a weakly typed build keeps ``float32`` graphs
    (:func:`topv.precision.float32_graphs`) in fp32; a strongly typed one takes the graph's own types."""
    if not strongly_typed and graph in float32:
        return "fp32"
    return precision


def plan_build(folder: str | Path, manifest: Any, options: BuildOptions) -> BuildPlan:
    """Decide precisions, profiles and output files; refuse to overwrite without ``force``.

    Raises:
        OutputExistsError: engines or ``engines.json`` exist and ``options.force`` is false.
        ConfigError / ArtifactError: bad options or an inconsistent manifest.
    """
    folder = Path(folder)
    if manifest.quantization:
        raise ConfigError("This folder holds int8 (MatMulInteger) graphs for ONNX Runtime's CPU provider; TensorRT does not "
                          "build them. Export without --quantize (fp32 or fp16) for TensorRT.")
    precision, strongly_typed = resolve_precision(manifest.dtype, options.precision)
    profiles = derive_profiles(manifest, options.opt_prompt_tokens)
    plan = BuildPlan(folder, precision, strongly_typed)
    float32 = float32_graphs(manifest.pruning.enabled, options.kept_set)
    for graph, entry in manifest.graphs.items():
        onnx = folder / entry.file
        plan.graphs.append(GraphPlan(graph, onnx, onnx.with_suffix(".engine"),
                                     graph_precision(graph, precision, strongly_typed, float32), profiles[graph]))
    outputs = [g.engine for g in plan.graphs] + [folder / ENGINE_MANIFEST_NAME]
    plan.existing = [p for p in outputs if p.exists()]
    if plan.existing and not options.force:
        names = ", ".join(p.name for p in plan.existing)
        raise OutputExistsError(
            f"{folder} already has TensorRT engines ({names}); pass --force to rebuild and replace them."
        )
    return plan


# ---------------------------------------------------------------------------------------------- TensorRT
def parser_errors(parser: Any) -> list[str]:
    """One line per error of a failed ``OnnxParser.parse_from_file``: node index, name, operator, description."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)

        def get(attr: str) -> Any:
            fn = getattr(err, attr, None)
            try:
                return fn() if callable(fn) else None
            except Exception:  # noqa: BLE001 - older bindings lack some accessors
                return None

        node, name, op = get("node"), get("node_name"), get("node_operator")
        where = f"node #{node}" if isinstance(node, int) and node >= 0 else "graph"
        if name:
            where += f" {name!r}"
        if op:
            where += f" ({op})"
        code = get("code")
        code_text = str(code).split(".")[-1] if code is not None else "?"
        lines.append(f"{where}: {get('desc')} [{code_text}]")
    return lines


def _host_bytes(buffer: Any) -> bytes:
    """Bytes of an ``IHostMemory`` (buffer protocol)."""
    return bytes(memoryview(buffer))


def _check_network_inputs(network: Any, plan: GraphPlan) -> None:
    names = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        names.append(tensor.name)
        if getattr(tensor, "is_shape_tensor", False):
            raise EngineBuildError(
                f"{plan.onnx.name}: input {tensor.name!r} is a shape tensor in TensorRT's network; topv's graphs take "
                "data inputs only. Re-export the model, and report this as a topv bug if it persists."
            )
        rng = plan.profile.inputs.get(tensor.name)
        if rng is None:
            raise EngineBuildError(
                f"{plan.onnx.name}: TensorRT sees an input {tensor.name!r} that manifest.json does not list for "
                f"{plan.graph}; the folder is inconsistent. Re-export it."
            )
        shape = tuple(tensor.shape)
        ok = len(shape) == len(rng.min) and all(d == -1 and lo != hi or d == lo == hi for d, lo, hi in zip(shape, rng.min, rng.max))
        if not ok:
            raise EngineBuildError(
                f"{plan.onnx.name}: input {tensor.name!r} has shape {list(shape)} in TensorRT (-1: dynamic) but the "
                f"manifest's profile is min {list(rng.min)} .. max {list(rng.max)}; the folder is inconsistent. Run "
                "`topv-check OUT_DIR` and re-export it."
            )
    missing = sorted(set(plan.profile.inputs) - set(names))
    if missing:
        raise EngineBuildError(
            f"{plan.onnx.name}: manifest.json lists inputs {missing} that TensorRT's parsed network does not have "
            "(unused inputs are dropped by the parser?). Re-export the model."
        )


def _configure(trt: Any, builder: Any, config: Any, plan: GraphPlan, options: BuildOptions, strongly_typed: bool, cache: Any) -> None:
    if options.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    if not strongly_typed:  # a strongly typed network takes its precisions from the graph; flags are refused
        if plan.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif plan.precision == "bf16":
            config.set_flag(trt.BuilderFlag.BF16)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32, not TF32 matmuls
    if cache is not None:
        config.set_timing_cache(cache, False)
    if plan.profile.dynamic:
        profile = builder.create_optimization_profile()
        for name, rng in plan.profile.inputs.items():
            profile.set_shape(name, rng.min, rng.opt, rng.max)
        config.add_optimization_profile(profile)


def _build_one(trt: Any, builder: Any, logger: Any, plan: GraphPlan, options: BuildOptions, strongly_typed: bool,
               cache_holder: dict[str, Any]) -> tuple[bytes, float]:
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    logger.errors.clear()
    t0 = time.perf_counter()
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx)):
        errors = parser_errors(parser) or logger.errors[-10:] or ["(the parser reported no details)"]
        raise EngineBuildError(
            f"TensorRT {trt.__version__}'s ONNX parser could not parse {plan.onnx} ({len(errors)} error(s)):\n  "
            + "\n  ".join(errors)
            + "\nRun `topv-check OUT_DIR --target tensorrt` for a static report of the graphs."
        )
    _check_network_inputs(network, plan)
    config = builder.create_builder_config()
    if cache_holder.get("cache") is None and cache_holder.get("wanted"):
        cache_holder["cache"] = _load_timing_cache(config, cache_holder.get("path"))
    _configure(trt, builder, config, plan, options, strongly_typed, cache_holder.get("cache"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "\n  ".join(logger.errors[-10:]) or "(no error was logged)"
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not build an engine for {plan.onnx.name} ({plan.precision}):\n  {detail}\n"
            "Out of memory? Lower --workspace, close other GPU processes, or build with --opt-level 1 (see "
            "docs/tensorrt.md, Jetson notes)."
        )
    data = _host_bytes(serialized)
    seconds = time.perf_counter() - t0
    del serialized, config, parser, network
    return data, seconds


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
        log.info("loading the timing cache %s (%d bytes)", path, len(data))
    try:
        return config.create_timing_cache(data)
    except Exception as exc:  # noqa: BLE001 - a stale or foreign cache is not fatal
        log.warning("ignoring the timing cache %s (%s); starting an empty one", path, exc)
        return config.create_timing_cache(b"")


def build_engines(folder: str | Path, options: BuildOptions | None = None) -> EngineManifest:
    """Build every graph of an export folder into ``<graph>.engine`` and write ``engines.json``.

    Raises:
        BackendUnavailableError: tensorrt (>= 10) is not installed, or no GPU can be identified.
        OutputExistsError: engines exist and ``options.force`` is false.
        EngineBuildError: the static check, the parser or the builder failed (the message says why).
        ArtifactError / ChecksumMismatchError: the export folder is damaged.
    """
    from topv.engines import device as devmod
    from topv.engines.trt_import import import_tensorrt
    from topv.artifact.manifest import read_manifest, verify_folder

    options = options or BuildOptions()
    folder = Path(folder)
    trt = import_tensorrt()
    manifest = read_manifest(folder)
    plan = plan_build(folder, manifest, options)
    verify_folder(folder, manifest, checksums=options.verify_checksums)
    if options.static_check:
        _static_check(folder)
    from topv.memory import PeakSampler, device_used_probe, host_rss, max_rss_bytes

    gpu: GpuInfo = devmod.detect_gpu(options.device)
    device_reader, device_method = device_used_probe(options.device)
    log.info("building %d engine(s) for %s with TensorRT %s on %s (compute capability %s), precision %s%s",
             len(plan.graphs), folder, trt.__version__, gpu.name, gpu.compute_capability, plan.precision,
             " (strongly typed)" if plan.strongly_typed else "")

    logger = make_logger(trt, logging.INFO if log.isEnabledFor(logging.DEBUG) else logging.WARNING)
    builder = trt.Builder(logger)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    cache_holder: dict[str, Any] = {"wanted": cache_path is not None, "path": cache_path, "cache": None}
    temps: dict[Path, Path] = {}
    records: dict[str, EngineRecord] = {}
    overall = {"host_rss_bytes": None, "device_used_bytes": None, "device_baseline_bytes": None}
    t_start = time.perf_counter()
    try:
        for gp in plan.graphs:
            log.info("building %s (%s%s)", gp.graph, gp.precision, ", dynamic profile" if gp.profile.dynamic else "")
            host, device = PeakSampler(host_rss, 0.05), PeakSampler(device_reader, 0.05)
            with host, device:
                data, seconds = _build_one(trt, builder, logger, gp, options, plan.strongly_typed, cache_holder)
            tmp = gp.engine.with_name(f".{gp.engine.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            temps[gp.engine] = tmp
            records[gp.graph] = EngineRecord(
                file=gp.engine.name, onnx=gp.onnx.name, precision=gp.precision, profile=gp.profile.to_json(),
                build_seconds=round(seconds, 3), bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                peak_host_rss_bytes=host.peak, peak_device_used_bytes=device.peak,
            )
            for key, value in (("host_rss_bytes", host.peak), ("device_used_bytes", device.peak)):
                overall[key] = max(v for v in (overall[key], value) if v is not None) if value is not None else overall[key]
            if overall["device_baseline_bytes"] is None:
                overall["device_baseline_bytes"] = device.baseline
            log.info("  %s: %.1f s, %.1f MiB", gp.graph, seconds, len(data) / 2**20)
            del data
        # Every engine built: replace the old ones, then describe them.
        old_manifest = folder / ENGINE_MANIFEST_NAME
        if old_manifest.exists():
            old_manifest.unlink()
        for final, tmp in temps.items():
            os.replace(tmp, final)
        temps.clear()
        cache = cache_holder.get("cache")
        if cache is not None and cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cache_path, _host_bytes(cache.serialize()))
    finally:
        for tmp in temps.values():
            if tmp.exists():
                tmp.unlink()
    result = EngineManifest(
        tensorrt_version=str(trt.__version__),
        gpu=gpu,
        precision=plan.precision,
        strongly_typed=plan.strongly_typed,
        engines=records,
        export={"dtype": manifest.dtype, "opset": manifest.opset, "format": manifest.format, "files": export_fingerprint(manifest)},
        workspace_bytes=options.workspace_bytes,
        builder_optimization_level=options.optimization_level,
        timing_cache=str(cache_path) if cache_path else None,
        peak_memory={**overall, "host_max_rss_bytes": max_rss_bytes(), "host_method": "process RSS, sampled every 50 ms",
                     "device_method": device_method + (", sampled every 50 ms" if device_reader else "")},
        total_build_seconds=round(time.perf_counter() - t_start, 3),
    )
    write_engine_manifest(folder, result)
    return result


def _static_check(folder: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        log.info("the onnx package is not installed; skipping the static check (topv-check) before the build")
        return
    from topv.engines.check import check_folder

    report = check_folder(folder)
    if not report.ok:
        raise EngineBuildError("The static check found graphs TensorRT will not build (pass --no-check to try anyway):\n"
                               + report.format_text())
