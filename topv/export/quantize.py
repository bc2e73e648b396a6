"""int8 weights for CPU deployment: ONNX Runtime dynamic quantization of every weight MatMul.

The graphs stay in the standard ONNX domain (``DynamicQuantizeLinear`` + ``MatMulInteger``); ONNX
Runtime's CPU provider fuses them into VNNI/AMX int8 kernels at load time. Activations, the KV cache, the
norms, softmax and the TopV solve stay float32; only weights of MatMuls with a constant operand are
quantized (per output channel, symmetric int8), and only in the graphs after the pruning decision unless
``kept_set="follow"`` (:mod:`topv.precision`: vision and prefill_head decide the kept tokens). The result no longer reproduces the float32 reference
token for token, so the export reports how close it is (cosine of logits and features, greedy-token
agreement) and fails only if the logits drift beyond a cosine of 0.99. TensorRT does not take these
graphs (``topv-check`` says so); build engines from an fp32 or fp16 export.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from topv.errors import BackendUnavailableError

log = logging.getLogger("topv.export")

WEIGHT_GRAPHS = ("vision", "prefill_head", "prefill_tail", "decode_step")  # the graphs with weight MatMuls
MIN_LOGIT_COSINE = 0.99


def quantized_graphs(pruned: bool, kept_set: str = "float32") -> list[str]:
    """The graphs ``--quantize int8`` quantizes: those with weights, less the ones the kept-set policy keeps float32."""
    from topv.precision import float32_graphs

    exact = float32_graphs(pruned, kept_set)
    return [g for g in WEIGHT_GRAPHS if g not in exact]


def quantize_folder(folder: Path, graph_files: dict[str, str], quantized: list[str]) -> dict[str, int]:
    """Quantize the weight MatMuls of the folder's ``quantized`` graphs in place and re-share every graph's weights."""
    import onnx

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - onnxruntime is needed for validation anyway
        raise BackendUnavailableError("--quantize int8 needs onnxruntime's quantization tools: pip install onnxruntime") from exc
    from topv.export.onnx_io import share_weights
    from topv.export.stream import WEIGHTS_FILE

    work = folder / "_int8"
    work.mkdir()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantizer logs one INFO line per skipped MatMul on the root logger
    try:
        paths = {}
        for name, file in graph_files.items():
            if name in quantized:
                target = work / name / file
                target.parent.mkdir()
                model = onnx.load(str(folder / file), load_external_data=True)
                quantize_dynamic(model, target, op_types_to_quantize=["MatMul"], per_channel=True,
                                 weight_type=QuantType.QInt8, use_external_data_format=True)
                paths[name] = target
            else:
                paths[name] = folder / file
        models = {name: onnx.load(str(path), load_external_data=True) for name, path in paths.items()}
        (folder / WEIGHTS_FILE).unlink()
        stats = share_weights(models, folder)
        for name, model in models.items():
            onnx.save(model, str(folder / graph_files[name]))
    finally:
        root.setLevel(level)
        shutil.rmtree(work, ignore_errors=True)
    return stats


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else 1.0


def check_quantized(backend: Any, calls: list[Any]) -> dict[str, Any]:
    """Cosine similarity of the int8 graphs' float outputs to the float32 modules', and equality of indices."""
    rows = []
    for call in calls:
        got = backend.run(call.graph, call.feeds, call.axes)
        for name, want in call.outputs.items():
            if np.issubdtype(np.asarray(want).dtype, np.integer):
                rows.append({"graph": call.graph, "output": name, "equal": bool(np.array_equal(got[name], want))})
            else:
                rows.append({"graph": call.graph, "output": name, "cosine": cosine(got[name], want)})
    logit_cos = [r["cosine"] for r in rows if r["output"] == "logits"]
    return {"checks": rows, "min_logit_cosine": min(logit_cos), "min_cosine": min(r["cosine"] for r in rows if "cosine" in r),
            "ok": min(logit_cos) >= MIN_LOGIT_COSINE, "threshold": MIN_LOGIT_COSINE}


def quantize_export(folder: Path, manifest: Any, job: Any, calls: list[Any], report: dict[str, Any]) -> Any:
    """Quantize in place, re-check the graphs, add the int8 comparison to ``report`` and return the new manifest.

    Raises:
        ToleranceError: the int8 logits drift beyond a cosine of ``MIN_LOGIT_COSINE`` from float32.
    """
    import json

    from topv.artifact.files import file_records
    from topv.errors import ToleranceError
    from topv.export.checks import open_exported
    from topv.export.onnx_io import check_graph

    quantized = quantized_graphs(manifest.pruning.enabled, job.options.kept_set)
    stats = quantize_folder(folder, {name: g.file for name, g in manifest.graphs.items()}, quantized)
    for g in manifest.graphs.values():
        check_graph(folder / g.file)
    manifest = manifest.replace(
        weights={"file": "weights.bin", **stats},
        quantization={"weights": "int8", "method": "onnxruntime dynamic quantization, per-channel symmetric int8",
                      "ops": ["DynamicQuantizeLinear", "MatMulInteger"], "graphs": quantized,
                      "kept_set": job.options.kept_set},
    )
    manifest.replace(files=file_records(folder)).write(folder)
    pipe = open_exported(folder, job, quantized=True)
    result = check_quantized(pipe.backend, calls)
    lines = [f"  [{'ok ' if result['ok'] else 'FAIL'}] int8 graphs vs float32 modules: min logits cosine "
             f"{result['min_logit_cosine']:.5f} (>= {result['threshold']}), min cosine of any float output {result['min_cosine']:.5f}"]
    want = report.get("generation", {}).get("tokens_reference")
    if want:
        got = pipe.generate(job.image, job.options.sample_prompt, max_new_tokens=len(want))
        prefix = next((i for i, (a, b) in enumerate(zip(got.token_ids, want)) if a != b), min(len(got.token_ids), len(want)))
        result["generation"] = {"tokens_int8": got.token_ids, "tokens_reference": want, "equal_prefix": prefix,
                                "kept_indices_int8": got.kept_indices,
                                "kept_indices_equal": got.kept_indices == report["generation"].get("kept_indices_reference")}
        lines.append(f"  [info] int8 greedy tokens agree with the float32 reference for the first {prefix} of {len(want)}")
        if got.kept_indices is not None:
            same = result["generation"]["kept_indices_equal"]
            # Vision and layers 0..K stay float32 unless --kept-set follow: then the kept set must be float32's.
            strict = job.options.kept_set == "float32"
            result["ok"] = result["ok"] and (same or not strict)
            lines.append(f"  [{'ok ' if same else 'FAIL' if strict else 'info'}] int8 kept indices "
                         f"{'equal' if same else 'differ from'} the float32 reference's (--kept-set {job.options.kept_set})")
    result["lines"] = lines
    report["int8"] = result
    (folder / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    for line in lines:
        log.info("%s", line)
    if not result["ok"]:
        kept_differ = not result.get("generation", {}).get("kept_indices_equal", True)
        why = (f"the int8 kept indices differ from float32's although vision and layers 0..K stayed float32"
               if kept_differ and result["min_logit_cosine"] >= MIN_LOGIT_COSINE else
               f"the int8 graphs drift too far from float32: logits cosine {result['min_logit_cosine']:.4f} < {MIN_LOGIT_COSINE}")
        raise ToleranceError(f"{why[0].upper()}{why[1:]}. Export without --quantize. The partial export is kept at {folder}.")
    return manifest
