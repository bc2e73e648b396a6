"""``export_model``: a Hugging Face LLaVA checkpoint in, a self-describing folder of ONNX graphs out.

Stages (each logged with its duration): load -> trace and export graphs -> share weights -> check graphs
-> copy processor -> validate (graphs, reference, generation) -> manifest -> move into place.
Everything is written to a temporary sibling folder and renamed into ``out_dir`` at the end; an
existing ``out_dir`` is replaced only with ``force=True``. When validation fails the partial folder is
kept for inspection and :class:`~topv.errors.ToleranceError` carries the numbers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from topv._version import ARTIFACT_FORMAT, __version__
from topv.errors import ConfigError, InputError, OutputExistsError, ToleranceError
from topv.manifest import file_records, write_manifest
from topv.pruning.config import TopVConfig
from topv.versions import library_versions

log = logging.getLogger("topv.export")

DEFAULT_SAMPLE_PROMPT = "Describe the image ."


@dataclass(frozen=True)
class ExportOptions:
    """What to export.

    Attributes:
        keep: visual (grid) tokens kept after pruning; None exports without pruning ("--keep all").
        layer: pruning layer K (0-indexed): layers 0..K see all tokens.
        max_prompt_tokens: P, the longest prompt (visual tokens included); default N + 64.
        max_new_tokens: M, new tokens the static KV cache has room for.
        dtype: weights and activations; fp16 keeps norms, softmax and the TopV solve in float32.
        opset: ONNX opset.
        config: TopV hyperparameters baked into the pruning graph.
        force: replace an existing output folder.
        validate_tokens: greedy tokens compared with the PyTorch reference (0 skips the generation check).
        sample_image / sample_prompt: the real input used to trace and validate (default: a generated scene).
        threads: ONNX Runtime threads for validation (default: all available cores).
        device: where the model is traced and validated: ``cpu`` or ``cuda[:i]`` (needs onnxruntime-gpu for
            the graph checks; large fp16 models are impractical to validate on a CPU).
        quantize: ``"int8"`` quantizes every weight MatMul to int8 after the float32 graphs have passed
            validation (CPU deployment; see ``topv.export.quantize``). None keeps float weights.
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
    sample_image: str | None = None
    sample_prompt: str = DEFAULT_SAMPLE_PROMPT
    threads: int | None = None
    device: str = "cpu"
    quantize: Literal["int8"] | None = None

    def __post_init__(self) -> None:
        if self.quantize not in (None, "int8"):
            raise ConfigError(f"quantize must be None or 'int8'; got {self.quantize!r}.")
        if self.quantize and self.dtype != "fp32":
            raise ConfigError("--quantize int8 applies to fp32 exports (int8 weights, float32 activations); drop --dtype fp16.")
        if self.dtype not in ("fp32", "fp16"):
            raise ConfigError(f"dtype must be 'fp32' or 'fp16'; got {self.dtype!r}.")
        if not isinstance(self.opset, int) or not 14 <= self.opset <= 20:
            raise ConfigError(f"opset must be an integer in 14..20 (the exporter's range); got {self.opset!r}.")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be an integer >= 1; got {self.max_new_tokens!r}.")
        if self.validate_tokens < 0:
            raise ConfigError(f"validate_tokens must be >= 0; got {self.validate_tokens!r}.")


class _Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.step = 0
        self.t0 = time.perf_counter()
        self.t_step = self.t0

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if self.step:
            log.info("      done in %.1f s", now - self.t_step)
        self.step += 1
        self.t_step = now
        log.info("[%d/%d] %s", self.step, self.total, message)

    def finish(self) -> float:
        now = time.perf_counter()
        log.info("      done in %.1f s", now - self.t_step)
        return now - self.t0


def sample_scene(size: int = 336):
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


def _check_output(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not force:
        raise OutputExistsError(
            f"{str(out_dir)!r} already exists; pass --force to replace it (its contents are only replaced once the "
            "new export has passed validation) or choose another folder."
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{str(out_dir)!r} exists and is not a folder; remove it or choose another path.")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(model_dir: str | Path, out_dir: str | Path, options: ExportOptions | None = None) -> Path:
    """Export ``model_dir`` (a Hugging Face LLaVA checkpoint folder) to ``out_dir``; returns ``out_dir``.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``options.force`` is False.
        UnsupportedModelError, KeepOutOfRangeError, LayerOutOfRangeError, ConfigError: bad request.
        ExportError / ToleranceError: a graph could not be written or does not match the reference.
    """
    options = options or ExportOptions()
    model_dir = Path(model_dir)
    out_dir = Path(out_dir)
    _check_output(out_dir, options.force)
    progress = _Progress(8 if options.quantize else 7)

    progress(f"loading {model_dir}")
    import torch

    from topv.export.graphs import StaticShapes, plan_graphs
    from topv.inputs import encode, load_image
    from topv.models.spec import model_spec
    from topv.pruning.selection import check_keep
    from topv.reference.loading import load_model, read_model_config

    raw_config = read_model_config(model_dir)
    spec = model_spec(raw_config)
    spec.check_layer(options.layer)
    keep = options.keep
    if keep is not None:
        check_keep(keep, spec.num_grid_tokens)
        if keep == spec.num_grid_tokens:
            keep = None  # keeping every token is no pruning
    torch_dtype = torch.float16 if options.dtype == "fp16" else torch.float32
    model, processor = load_model(model_dir, dtype=torch_dtype, device=options.device, attn_implementation="eager")
    image = load_image(options.sample_image) if options.sample_image else sample_scene(max(spec.image_size, 64))
    sample = encode(processor, image, options.sample_prompt)
    longer = encode(processor, image, " ".join([options.sample_prompt] * 3))
    minimal = int(encode(processor, image, "x")["input_ids"].shape[1])
    kept_visual = (keep if keep is not None else spec.num_grid_tokens) + spec.num_extra_visual_tokens
    max_prompt = options.max_prompt_tokens or spec.num_visual_tokens + 64
    if max_prompt < minimal:
        raise InputError(
            f"--max-prompt-tokens {max_prompt} is too small: the image alone takes {spec.num_visual_tokens} tokens and "
            f"the chat template {minimal - spec.num_visual_tokens} more for a one-word question ({minimal} in all). "
            f"Use at least {minimal + 16}."
        )
    max_positions = getattr(model.config.text_config, "max_position_embeddings", None)
    if max_positions and max_prompt + options.max_new_tokens > max_positions:
        raise InputError(
            f"--max-prompt-tokens {max_prompt} + --max-new-tokens {options.max_new_tokens} exceeds the model's "
            f"{max_positions} positions; lower one of them."
        )
    shapes = StaticShapes(max_prompt, options.max_new_tokens, kept_visual, spec.num_visual_tokens)
    samples = [(s["input_ids"], s["pixel_values"].to(torch_dtype)) for s in (sample, longer)]
    samples = [s for s in samples if s[0].shape[1] <= max_prompt] or samples[:1]
    if sample["input_ids"].shape[1] > max_prompt:
        raise InputError(
            f"The sample prompt takes {sample['input_ids'].shape[1]} tokens, more than --max-prompt-tokens {max_prompt}; "
            "raise --max-prompt-tokens or give a shorter --sample-prompt."
        )

    tmp = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    keep_tmp = False
    try:
        progress(f"tracing and exporting graphs (K={options.layer}, keep={keep if keep is not None else 'all'}, {options.dtype})")
        plans = plan_graphs(model, spec, layer=options.layer, keep=keep, config=options.config, shapes=shapes, sample=sample)
        plans_by_name = {p.name: p for p in plans}
        from topv.export.onnx_io import check_graph, export_module, graph_io, load_for_sharing, save_graph, share_weights

        raw = tmp / "_raw"
        for plan in plans:
            t0 = time.perf_counter()
            export_module(plan.module, plan.args, raw / plan.name / plan.file, plan.input_names, plan.output_names, plan.dynamic_axes, options.opset)
            log.info("      %s exported in %.1f s", plan.file, time.perf_counter() - t0)

        progress("sharing weights between graphs (weights.bin)")
        graphs = {p.name: load_for_sharing(raw / p.name / p.file) for p in plans}
        stats = share_weights(graphs, tmp)
        for plan in plans:
            save_graph(graphs[plan.name], tmp / plan.file)
        del graphs
        shutil.rmtree(raw)
        log.info("      %.1f MB of initializers stored as %.1f MB", stats["initializer_bytes"] / 1e6, stats["stored_bytes"] / 1e6)

        progress("checking graphs (onnx.checker, full shape inference, standard ops only)")
        io = {}
        for plan in plans:
            io[plan.name] = graph_io(check_graph(tmp / plan.file))

        progress("saving the tokenizer and image processor")
        processor.save_pretrained(tmp / "processor")

        manifest = _manifest(model_dir, raw_config, spec, options, keep, shapes, plans, io, stats)
        manifest["files"] = file_records(tmp)
        write_manifest(tmp, manifest)

        progress("validating graphs against PyTorch and generation against the reference")
        report, ok = _validate(tmp, manifest, model, processor, plans_by_name, samples, shapes, keep, options, image)
        (tmp / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
        if not ok:
            keep_tmp = True
            failing = [line for line in report["lines"] if "FAIL" in line or "mismatch" in line]
            raise ToleranceError(
                "The exported graphs do not match the PyTorch reference:\n" + "\n".join(failing)
                + f"\nThe partial export is kept for inspection at {tmp} (see validation.json)."
            )
        for line in report["lines"]:
            log.info("%s", line)
        if options.quantize:
            progress("quantizing weight MatMuls to int8 and checking them against float32")
            manifest["weights"] = {"file": "weights.bin", **_quantize(tmp, manifest, plans_by_name, samples, shapes, options, report, image)}
            (tmp / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
            for line in report["int8"]["lines"]:
                log.info("%s", line)
            if not report["int8"]["ok"]:
                keep_tmp = True
                raise ToleranceError(
                    f"The int8 graphs drift too far from float32: logits cosine {report['int8']['min_logit_cosine']:.4f} < "
                    f"{report['int8']['threshold']}. Export without --quantize. The partial export is kept at {tmp}."
                )

        progress(f"writing manifest and moving into place: {out_dir}")
        manifest["validation"] = {"file": "validation.json", "ok": True}
        manifest["files"] = file_records(tmp)
        write_manifest(tmp, manifest)
        _move_into_place(tmp, out_dir)
        total = progress.finish()
        log.info("export finished in %.1f s: %s", total, out_dir)
        return out_dir
    finally:
        if tmp.exists() and not keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _manifest(model_dir, raw_config, spec, options, keep, shapes, plans, io, stats) -> dict[str, Any]:
    layer = options.layer
    kv_dtype = "float16" if options.dtype == "fp16" else "float32"
    item = 2 if options.dtype == "fp16" else 4
    per_slot = 2 * spec.num_kv_heads * spec.head_dim * item
    head_layers = layer + 1
    tail_layers = spec.num_layers - head_layers
    kv_bytes = per_slot * (head_layers * shapes.capacity_head + tail_layers * shapes.capacity_tail)
    unpruned = per_slot * spec.num_layers * shapes.capacity_head
    graphs = {}
    for plan in plans:
        entry = {"file": plan.file, "inputs": io[plan.name].inputs, "outputs": io[plan.name].outputs}
        graphs[plan.name] = entry
    generation = _generation_config(model_dir)
    return {
        "format": ARTIFACT_FORMAT,
        "topv_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "source": str(model_dir.resolve()),
            "architecture": spec.architecture,
            "config": raw_config,
            "spec": spec.to_dict(),
        },
        "pruning": {
            "enabled": keep is not None,
            "method": "topv" if keep is not None else "none",
            "layer": layer,
            "keep": keep,
            "kept_visual_tokens": shapes.kept_visual_tokens,
            "config": options.config.to_dict(),
        },
        "static_shapes": {
            "batch": 1,
            "max_prompt_tokens": shapes.max_prompt_tokens,
            "max_new_tokens": shapes.max_new_tokens,
            "max_kept_prompt_tokens": shapes.max_kept_prompt_tokens,
            "axes": {
                "sequence": {"min": 1, "max": shapes.max_prompt_tokens,
                             "meaning": "prompt tokens, visual tokens included"},
                "kept_sequence": {"min": 1, "max": shapes.max_kept_prompt_tokens,
                                  "meaning": "sequence - visual tokens + kept visual tokens"},
            },
        },
        "kv_cache": {
            "num_layers": spec.num_layers,
            "num_kv_heads": spec.num_kv_heads,
            "head_dim": spec.head_dim,
            "dtype": kv_dtype,
            "capacity_head": shapes.capacity_head,
            "capacity_tail": shapes.capacity_tail,
            "layers": [
                {"layer": i, "segment": "head" if i <= layer else "tail",
                 "capacity": shapes.capacity_head if i <= layer else shapes.capacity_tail}
                for i in range(spec.num_layers)
            ],
            "bytes": kv_bytes,
            "bytes_unpruned": unpruned,
        },
        "graphs": graphs,
        "weights": {"file": "weights.bin", **stats},
        "dtype": options.dtype,
        "opset": options.opset,
        "processor": {"folder": "processor"},
        "generation": generation,
        "versions": library_versions(),
    }


def _quantize(tmp: Path, manifest: dict[str, Any], plans, samples, shapes, options: ExportOptions, report: dict[str, Any],
              image: Any) -> dict[str, int]:
    """Quantize in place, re-check the graphs, and add the int8 comparison to ``report`` (as ``report["int8"]``)."""
    from topv.export.onnx_io import check_graph
    from topv.export.quantize import QUANTIZED_GRAPHS, check_quantized, quantize_folder
    from topv.runtime.ort_executor import import_onnxruntime, session_options
    from topv.runtime.pipeline import Pipeline

    stats = quantize_folder(tmp, {name: entry["file"] for name, entry in manifest["graphs"].items()})
    for entry in manifest["graphs"].values():
        check_graph(tmp / entry["file"])
    manifest["files"] = file_records(tmp)
    write_manifest(tmp, manifest)
    ort = import_onnxruntime()
    opts = session_options(options.threads or 1)
    sessions = {name: ort.InferenceSession(str(tmp / entry["file"]), sess_options=opts, providers=["CPUExecutionProvider"])
                for name, entry in manifest["graphs"].items()}
    result = check_quantized(sessions, plans, samples, shapes, options.layer)
    del sessions
    lines = [f"  [{'ok ' if result['ok'] else 'FAIL'}] int8 graphs vs float32 modules: min logits cosine "
             f"{result['min_logit_cosine']:.5f} (>= {result['threshold']}), min cosine of any float output {result['min_cosine']:.5f}"]
    gen = report.get("generation", {})
    if gen.get("tokens_reference"):
        pipe = Pipeline.load(tmp, "ort-cpu", threads=options.threads, verify_checksums=False)
        got = pipe.generate(image, options.sample_prompt, max_new_tokens=len(gen["tokens_reference"]))
        want = gen["tokens_reference"]
        prefix = next((i for i, (a, b) in enumerate(zip(got.token_ids, want)) if a != b), min(len(got.token_ids), len(want)))
        result["generation"] = {"tokens_int8": got.token_ids, "tokens_reference": want, "equal_prefix": prefix,
                                "kept_indices_int8": got.kept_indices, "kept_indices_equal": got.kept_indices == gen.get("kept_indices_reference")}
        lines.append(f"  [info] int8 greedy tokens agree with the float32 reference for the first {prefix} of {len(want)}")
    result["lines"] = lines
    report["int8"] = result
    manifest["quantization"] = {"weights": "int8", "method": "onnxruntime dynamic quantization, per-channel symmetric int8",
                                "ops": ["DynamicQuantizeLinear", "MatMulInteger"], "graphs": list(QUANTIZED_GRAPHS)}
    return stats


def _generation_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "generation_config.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if "eos_token_id" not in data:
        cfg = json.loads((model_dir / "config.json").read_text())
        data["eos_token_id"] = cfg.get("text_config", {}).get("eos_token_id", cfg.get("eos_token_id"))
    return {"eos_token_id": data.get("eos_token_id"), "pad_token_id": data.get("pad_token_id")}


def _validate(tmp, manifest, model, processor, plans, samples, shapes, keep, options, image) -> tuple[dict[str, Any], bool]:
    import torch

    import topv
    from topv.export.validate import check_against_reference, check_graphs, graph_lines, summary
    from topv.runtime.ort_executor import import_onnxruntime, session_options

    ort = import_onnxruntime()
    opts = session_options(options.threads or 1)
    on_gpu = options.device.startswith("cuda")
    if on_gpu:
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        index = torch.device(options.device).index or 0
        providers: list = [("CUDAExecutionProvider", {"device_id": str(index)}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    sessions = {name: ort.InferenceSession(str(tmp / entry["file"]), sess_options=opts, providers=providers)
                for name, entry in manifest["graphs"].items()}
    checks = check_graphs(sessions, plans, samples, shapes, options.layer, options.dtype)
    ref_checks = check_against_reference(
        model, plans, *samples[0], layer=options.layer, keep=keep, config=options.config, shapes=shapes, dtype=options.dtype
    )
    del sessions
    lines = graph_lines(checks + ref_checks) + [c.line() for c in checks + ref_checks if not c.ok]
    ok = all(c.ok for c in checks + ref_checks)
    generation: dict[str, Any] = {"skipped": True}
    if options.validate_tokens:
        from topv.runtime.pipeline import Pipeline

        pipe = Pipeline.load(tmp, "ort-cuda" if on_gpu else "ort-cpu", threads=options.threads, device=options.device if on_gpu else None,
                             verify_checksums=False)
        n = min(options.validate_tokens, shapes.max_new_tokens)
        got = pipe.generate(image, options.sample_prompt, max_new_tokens=n)
        with torch.no_grad():
            want = topv.generate(model, processor, image, options.sample_prompt, keep=keep, layer=options.layer,
                                 method="topv", max_new_tokens=n, config=options.config)
        same_tokens = got.token_ids == want.token_ids
        same_kept = got.kept_indices == want.kept_indices
        generation = {
            "prompt": options.sample_prompt,
            "tokens_exported": got.token_ids,
            "tokens_reference": want.token_ids,
            "kept_indices_exported": got.kept_indices,
            "kept_indices_reference": want.kept_indices,
            "tokens_equal": same_tokens,
            "kept_indices_equal": same_kept,
        }
        lines.append(f"  [{'ok ' if same_tokens else 'FAIL'}] generation: {len(got.token_ids)} greedy tokens "
                     f"{'equal' if same_tokens else 'mismatch'} to the PyTorch reference")
        if keep is not None:
            lines.append(f"  [{'ok ' if same_kept else 'FAIL'}] kept indices {'equal' if same_kept else 'mismatch'} "
                         f"to the reference ({len(got.kept_indices)} kept)")
        ok = ok and same_tokens and same_kept
    report = {"ok": ok, "dtype": options.dtype, "graphs": summary(checks), "reference": summary(ref_checks),
              "generation": generation, "lines": lines}
    return report, ok
