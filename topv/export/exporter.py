"""``export_model``: a Hugging Face VLM checkpoint in, a self-describing folder of ONNX graphs out.

Stages (each logged with its duration and the peak memory so far): refuse a machine without the memory or disk
-> load (memory-mapped) -> run the graph chain on the PyTorch modules and trace every graph on the inputs it saw,
its weights streamed once into ``weights.bin`` (``topv.export.stream``) -> check graphs -> save processor ->
validate (reference first, then the model is released and ONNX Runtime runs the graphs and a generation;
``--validate``) -> (quantize) -> manifest -> move into place. Everything is written to a hidden
sibling folder and moved into ``out_dir`` only after validation (``topv.export.output``). When validation
fails the partial folder is kept for inspection and :class:`~topv.errors.ToleranceError` has the numbers.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from topv.artifact.files import file_records, fsync_tree
from topv.artifact.manifest import DTYPES, GraphInfo, KVLayout, Manifest, StaticShapes
from topv.errors import ConfigError, InputError, ToleranceError
from topv.export import output
from topv.export.resources import check_resources
from topv.memory import memory_note
from topv.pruning.config import TopVConfig
from topv.versions import library_versions

log = logging.getLogger("topv.export")

DEFAULT_SAMPLE_PROMPT = "Describe the image ."
VALIDATE_STAGES = {
    "full": "validating graphs against PyTorch and generation against the reference",
    "graphs": "validating graphs against PyTorch and the PyTorch modules against the reference (no generation)",
    "none": "skipping numeric validation (--validate none): structural checks only",
}


@dataclass(frozen=True)
class ExportOptions:
    """What to export.

    Attributes:
        keep: visual (grid) tokens kept after pruning; None exports without pruning ("--keep all").
        layer: pruning layer K (0-indexed): layers 0..K see all tokens (ignored without pruning).
        max_prompt_tokens: P, the longest prompt (visual tokens included); None: N + 64.
        max_new_tokens: M, new tokens the static KV cache has room for.
        dtype: weights and activations; fp16 keeps norms, softmax and the TopV solve in float32.
        opset: ONNX opset.
        config: TopV hyperparameters baked into the pruning graph.
        force: replace an existing output folder (only a topv export).
        validate_tokens: tokens of the generation check against the PyTorch reference (0 skips it).
        validate: what the export checks (``topv.export.checks``): ``"full"`` (default) every graph against its
            PyTorch module on ONNX Runtime, the modules against the transformers reference, and a generation
            through the exported folder against the reference; ``"graphs"`` all but the generation; ``"none"``
            only the structural checks (onnx.checker with full shape inference). The PyTorch model is released
            before ONNX Runtime opens the graphs, so the two never hold the weights at once.
        sample_image / sample_prompt: the real input used to trace and validate (default: a generated scene).
        threads: ONNX Runtime threads for validation (default: all available cores).
        device: where the model is traced and validated: ``cpu`` or ``cuda[:i]``.
        quantize: ``"int8"`` quantizes the weight MatMuls after the float32 graphs passed validation (of the graphs
            after the pruning decision, unless ``kept_set="follow"``; :mod:`topv.precision`).
        kept_set: with ``quantize``: ``"float32"`` (default) keeps vision and prefill_head, which decide the kept
            tokens, in float32; ``"follow"`` quantizes them too (faster; the kept set may differ, and the export
            reports whether it does).
        image_size: ``(height, width)`` for families whose resolution is chosen at export (Qwen2-VL).
    """

    keep: int | None = None
    layer: int = 2
    max_prompt_tokens: int | None = None
    max_new_tokens: int = 32
    dtype: Literal["fp32", "fp16"] = "fp32"
    opset: int = 17
    config: TopVConfig = field(default_factory=TopVConfig)
    force: bool = False
    validate_tokens: int = 8
    validate: Literal["full", "graphs", "none"] = "full"
    sample_image: str | None = None
    sample_prompt: str = DEFAULT_SAMPLE_PROMPT
    threads: int | None = None
    device: str = "cpu"
    quantize: Literal["int8"] | None = None
    kept_set: Literal["float32", "follow"] = "float32"
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        def integer(name: str, low: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}{' or None' if optional else ''}; got {value!r}.")

        integer("max_new_tokens", 1)
        integer("validate_tokens", 0)
        integer("max_prompt_tokens", 1, optional=True)
        integer("threads", 1, optional=True)
        if self.validate not in VALIDATE_STAGES:
            raise ConfigError(f"validate must be one of {', '.join(VALIDATE_STAGES)}; got {self.validate!r}.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be 'fp32' or 'fp16'; got {self.dtype!r}.")
        if self.quantize not in (None, "int8"):
            raise ConfigError(f"quantize must be None or 'int8'; got {self.quantize!r}.")
        if self.quantize and self.dtype != "fp32":
            raise ConfigError("--quantize int8 applies to fp32 exports (int8 weights, float32 activations); drop --dtype fp16.")
        from topv.precision import check_kept_set

        if check_kept_set(self.kept_set) != "float32" and not self.quantize:
            raise ConfigError("--kept-set follow chooses the precision of the graphs that decide the kept tokens under "
                              "--quantize int8; without --quantize there is nothing for them to follow (for engines and "
                              "openvino it is an option of topv-build and topv-run).")
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or not 14 <= self.opset <= 20:
            raise ConfigError(f"opset must be an integer in 14..20 (the exporter's range); got {self.opset!r}.")
        if not isinstance(self.config, TopVConfig):
            raise ConfigError(f"config must be a TopVConfig; got {type(self.config).__name__}.")


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.step = total, 0
        self.t0 = self.t_step = time.perf_counter()

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if self.step:
            log.info("      done in %.1f s (%s)", now - self.t_step, memory_note())
        self.step, self.t_step = self.step + 1, now
        log.info("[%d/%d] %s", self.step, self.total, message)

    def finish(self) -> float:
        log.info("      done in %.1f s (%s)", time.perf_counter() - self.t_step, memory_note())
        return time.perf_counter() - self.t0


class _LayerProgress:
    """Per-layer progress of long forward passes (recording the chain, tracing a graph): a line per decoder layer
    reached, at most one per ``every`` seconds, with the elapsed time and the memory so far."""

    def __init__(self, layers: Any, every: float = 10.0) -> None:
        self.layers, self.every, self.what = list(layers), every, ""
        self.t0 = self.last = time.perf_counter()  # t0 restarts at each pass; last throttles across passes
        self.handles: list[Any] = []

    def __enter__(self) -> "_LayerProgress":
        self.t0 = time.perf_counter()
        total = len(self.layers)
        for i, layer in enumerate(self.layers):  # the graph modules call a layer's parts, not the layer itself
            entry = getattr(layer, "input_layernorm", layer)
            self.handles.append(entry.register_forward_pre_hook(lambda module, args, i=i: self._reached(i, total)))
        return self

    def _reached(self, i: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            log.info("      %s: decoder layer %d/%d, %.0f s (%s)", self.what, i + 1, total, now - self.t0, memory_note())

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


def sample_scene(size: int = 336) -> Any:
    """A deterministic test image (gradient background with a few coloured shapes) for tracing."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for y in range(size):
        draw.line([(0, y), (size, y)], fill=(40 + y * 100 // size, 60, 120 - y * 60 // size))
    s = size // 8
    draw.ellipse([s, s, 3 * s, 3 * s], fill=(220, 40, 40))
    draw.rectangle([5 * s, 2 * s, 7 * s, 4 * s], fill=(40, 200, 60))
    draw.polygon([(4 * s, 5 * s), (3 * s, 7 * s), (5 * s, 7 * s)], fill=(240, 220, 30))
    return img


@dataclass
class _Job:
    """Everything the stages share."""

    model_dir: Path
    out_dir: Path
    options: ExportOptions
    family: Any
    spec: Any
    raw_config: dict[str, Any]
    keep: int | None
    layer: int
    shapes: StaticShapes
    model: Any = None
    processor: Any = None
    image: Any = None
    samples: list[dict[str, Any]] = field(default_factory=list)

    def load_model(self) -> None:
        """The PyTorch model at the export dtype (and its processor); safetensors weights stay memory-mapped."""
        import torch

        from topv.config import check_device
        from topv.reference.loading import load_model

        check_device(self.options.device)
        dtype = torch.float16 if self.options.dtype == "fp16" else torch.float32
        self.model, processor = load_model(self.model_dir, dtype=dtype, device=self.options.device, attn_implementation="eager")
        if self.processor is None:
            self.processor = self.family.processor_for(processor, self.spec)

    def release_model(self) -> None:
        """Drop the PyTorch model (validation on ONNX Runtime maps ``weights.bin`` instead); :meth:`reload_model`
        brings it back when a check needs the reference again."""
        from topv.memory import release_device_memory, trim_host_memory

        self.model = None
        release_device_memory(self.options.device.startswith("cuda"))
        trim_host_memory()

    def reload_model(self) -> None:
        if self.model is None:
            self.load_model()

    @property
    def kv(self) -> KVLayout:
        s = self.spec
        return KVLayout(s.num_layers, self.layer, s.num_kv_heads, s.head_dim, self.shapes.capacity_head,
                        self.shapes.capacity_tail, DTYPES[self.options.dtype])


def _plan(model_dir: Path, out_dir: Path, options: ExportOptions) -> _Job:
    """Everything decided from the config alone, before any weight is loaded."""
    from topv.families import family_for_config, read_model_config
    from topv.pruning.selection import check_keep

    raw = read_model_config(model_dir)
    family = family_for_config(raw)
    image_hw = options.image_size or family.default_image_hw(raw, model_dir)
    spec = family.spec(raw, image_hw)
    keep = options.keep
    if keep is not None:
        check_keep(keep, spec.num_grid_tokens)
        if keep == spec.num_grid_tokens:
            log.warning("--keep %d keeps every visual token: exporting without pruning (no prune graph)", keep)
            keep = None
    layer = spec.head_layers(options.layer, keep is not None)
    max_prompt = options.max_prompt_tokens if options.max_prompt_tokens is not None else spec.num_visual_tokens + 64
    if max_prompt <= spec.num_visual_tokens:
        raise InputError(
            f"--max-prompt-tokens {max_prompt} is too small: the image alone takes {spec.num_visual_tokens} tokens. "
            f"Use at least {spec.num_visual_tokens + 32}."
        )
    limit = spec.max_position_embeddings
    if limit and max_prompt + options.max_new_tokens > limit:
        raise InputError(f"--max-prompt-tokens {max_prompt} + --max-new-tokens {options.max_new_tokens} exceeds the model's "
                         f"{limit} positions; lower one of them.")
    kept_visual = (keep if keep is not None else spec.num_grid_tokens) + spec.num_extra_visual_tokens
    shapes = StaticShapes(max_prompt, options.max_new_tokens, spec.num_visual_tokens, kept_visual)
    return _Job(model_dir, out_dir, options, family, spec, raw, keep, layer, shapes)


def _load(job: _Job) -> None:
    from topv.inputs import load_image

    opts = job.options
    job.load_model()
    job.image = load_image(opts.sample_image) if opts.sample_image else sample_scene(max(max(job.spec.image_hw), 64))
    minimal = int(job.processor.encode(job.image, "x")["input_ids"].shape[1])
    if job.shapes.max_prompt_tokens < minimal:
        raise InputError(
            f"--max-prompt-tokens {job.shapes.max_prompt_tokens} is too small: the image alone takes {job.spec.num_visual_tokens} "
            f"tokens and the chat template {minimal - job.spec.num_visual_tokens} more for a one-word question ({minimal} in "
            f"all). Use at least {minimal + 16}."
        )
    sample = job.processor.encode(job.image, opts.sample_prompt)
    if sample["input_ids"].shape[1] > job.shapes.max_prompt_tokens:
        raise InputError(f"The sample prompt takes {sample['input_ids'].shape[1]} tokens, more than --max-prompt-tokens "
                         f"{job.shapes.max_prompt_tokens}; raise --max-prompt-tokens or give a shorter --sample-prompt.")
    longer = job.processor.encode(job.image, " ".join([opts.sample_prompt] * 3))
    job.samples = [s for s in (sample, longer) if s["input_ids"].shape[1] <= job.shapes.max_prompt_tokens]
    for s in job.samples:
        s["pixel_values"] = s["pixel_values"].astype("float16" if opts.dtype == "fp16" else "float32")


def _run_chain(backend: Any, job: _Job, inputs: dict[str, Any]) -> Any:
    """One prompt through the graph chain on ``backend`` (prefill and one decode step)."""
    import numpy as np

    from topv.runtime.chain import GraphChain

    chain = GraphChain(backend, job.kv, job.shapes, job.keep is not None)
    state = chain.new_state()
    out = chain.prefill(state, inputs["input_ids"], chain.vision(inputs["pixel_values"]))
    chain.decode(state, int(np.argmax(out.logits)))
    return out


def _trace(job: _Job, tmp: Path, progress: _Progress) -> tuple[dict[str, Any], list[Any]]:
    """Record the chain on the PyTorch modules, then write every graph traced on its recorded inputs, its weights
    streamed once into ``weights.bin`` (:mod:`topv.export.stream`); returns the graphs' records and the calls."""
    from topv.export.onnx_io import check_graph, graph_info, save_graph, set_io_shapes
    from topv.export.stream import WeightWriter, export_graph
    from topv.graphs.build import build_graph_modules
    from topv.memory import trim_host_memory
    from topv.runtime.backends.torch.backend import TorchBackend
    from topv.runtime.chain import Recorder

    opts = job.options
    progress(f"tracing and writing graphs (K={job.layer}, keep={job.keep if job.keep is not None else 'all'}, {opts.dtype}; "
             "weights streamed once into weights.bin)")
    modules = build_graph_modules(job.model, job.family, job.spec, layer=job.layer, keep=job.keep, config=opts.config)
    recorder = Recorder(TorchBackend(job.kv, modules, opts.device))
    t0 = time.perf_counter()
    layers = _LayerProgress(job.family.language_model(job.model).layers)
    with layers:
        for i, inputs in enumerate(job.samples):
            layers.what = f"recording the chain on prompt {i + 1}/{len(job.samples)}"
            _run_chain(recorder, job, inputs)
    log.info("      graph chain recorded on the PyTorch modules in %.1f s (%s)", time.perf_counter() - t0, memory_note())
    writer = WeightWriter(tmp)
    try:
        for name, graph in modules.items():
            t0, before = time.perf_counter(), writer.stored_bytes
            call = recorder.first(name)
            args = tuple(recorder.inner.asarray(call.feeds[i]) for i in graph.input_names)
            layers.what = f"tracing {graph.file}"
            with layers:
                model = export_graph(graph, args, writer, opts.opset)
            set_io_shapes(model, _declared_shapes(graph, call))
            save_graph(model, tmp / graph.file)
            del model
            trim_host_memory()
            log.info("      %s written in %.1f s (%.1f MB of new weights; %s)", graph.file, time.perf_counter() - t0,
                     (writer.stored_bytes - before) / 1e6, memory_note())
    finally:
        writer.close()
    stats = writer.stats()
    log.info("      %.1f MB of initializers stored as %.1f MB", stats["initializer_bytes"] / 1e6, stats["stored_bytes"] / 1e6)
    progress("checking graphs (onnx.checker, full shape inference, standard ops, declared axes only)")
    graphs = {name: graph_info(check_graph(tmp / g.file), g.file) for name, g in modules.items()}
    return {"graphs": graphs, "weights": {"file": "weights.bin", **stats}}, recorder.calls


def _declared_shapes(graph: Any, call: Any) -> dict[str, tuple[int | str, ...]]:
    """Each input's and output's traced shape with its dynamic axes named."""
    shapes = {}
    for name, array in {**call.feeds, **call.outputs}.items():
        dims: list[int | str] = list(array.shape)
        for axis, label in graph.dynamic_axes.get(name, {}).items():
            dims[axis] = label
        shapes[name] = tuple(dims)
    return shapes


def _manifest(job: _Job, graphs: dict[str, GraphInfo], weights: dict[str, Any]) -> Manifest:
    from topv.artifact.manifest import PruningInfo

    gen = job.model.generation_config
    eos = gen.eos_token_id if gen is not None else None
    return Manifest(
        model_source=str(job.model_dir.resolve()), config=job.raw_config, spec=job.spec,
        pruning=PruningInfo(job.keep is not None, job.layer, job.keep, job.shapes.kept_visual_tokens, job.options.config),
        shapes=job.shapes, graphs=graphs, dtype=job.options.dtype, opset=job.options.opset,
        eos_token_ids=tuple([eos] if isinstance(eos, int) else (eos or [])), weights=weights, versions=library_versions(),
    )


def _write(job: _Job, tmp: Path, progress: _Progress) -> tuple[Manifest, Any]:
    """Graphs, weights, processor and a first manifest (not yet validated) in ``tmp``."""
    traced, calls = _trace(job, tmp, progress)
    progress("saving the tokenizer and image processor")
    job.processor.save(tmp / "processor")
    manifest = _manifest(job, traced["graphs"], traced["weights"])
    manifest.replace(files=file_records(tmp)).write(tmp)
    return manifest, calls


def export_model(model_dir: str | Path, out_dir: str | Path, options: ExportOptions | None = None) -> Path:
    """Export ``model_dir`` (a Hugging Face checkpoint folder of a supported family) to ``out_dir``; returns ``out_dir``.

    Raises:
        OutputExistsError: ``out_dir`` exists without ``force``, is not a topv export, or is the model folder.
        UnsupportedModelError, KeepOutOfRangeError, LayerOutOfRangeError, ConfigError, InputError: a bad request.
        ExportError / ToleranceError: a graph could not be written or does not match the reference.
    """
    options = options or ExportOptions()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    job = _plan(model_dir, out_dir, options)
    output.check_output(out_dir, model_dir, options.force)
    check_resources(model_dir, out_dir, options)
    progress = _Progress(7 if options.quantize else 6)
    progress(f"loading {model_dir}")
    _load(job)
    with output.parent_lock(out_dir):
        output.recover_and_clean(out_dir)
    with output.partial_dir(out_dir) as tmp:
        try:
            manifest, calls = _write(job, tmp, progress)
            progress(VALIDATE_STAGES[options.validate])
            from topv.export.checks import validate_export

            report = validate_export(tmp, job, calls)
            if not report["ok"]:
                failing = [line for line in report["lines"] if "FAIL" in line]
                failing.sort(key=lambda line: "kept indices of the" not in line)  # a kept-set diagnosis explains the rest
                raise ToleranceError("The exported graphs do not match the PyTorch reference:\n" + "\n".join(failing)
                                     + f"\nThe partial export is kept for inspection at {tmp} (see validation.json; the "
                                     "next export into the same place removes it).")
            for line in report["lines"]:
                log.info("%s", line)
            if options.quantize:
                progress("quantizing weight MatMuls to int8 and checking them against float32")
                from topv.export.quantize import quantize_export

                manifest = quantize_export(tmp, manifest, job, calls, report)
            progress(f"writing manifest and moving into place: {out_dir}")
            manifest = manifest.replace(validation={"file": "validation.json", "ok": True, "mode": options.validate})
            manifest.replace(files=file_records(tmp)).write(tmp)
            fsync_tree(tmp)
            with output.parent_lock(out_dir):
                output.move_into_place(tmp, out_dir, model_dir, options.force)
        except BaseException as exc:
            if not isinstance(exc, ToleranceError):  # a failed check keeps the folder for inspection
                shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("export finished in %.1f s: %s", progress.finish(), out_dir)
    return out_dir
