"""int8 weights for CPU deployment: ONNX Runtime dynamic quantization of every weight MatMul.

The graphs stay in the standard ONNX domain (``DynamicQuantizeLinear`` + ``MatMulInteger``); ONNX
Runtime's CPU provider fuses them into VNNI/AMX int8 kernels at load time. Activations, the KV cache, the
norms, softmax and the TopV solve stay float32; only weights of MatMuls with a constant operand are
quantized (per output channel, symmetric int8). The result no longer reproduces the float32 reference
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

QUANTIZED_GRAPHS = ("vision", "prefill_head", "prefill_tail", "decode_step")
MIN_LOGIT_COSINE = 0.99


def quantize_folder(folder: Path, graph_files: dict[str, str]) -> dict[str, int]:
    """Quantize the weight MatMuls of the folder's graphs in place and re-share their weights."""
    import onnx

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - onnxruntime is needed for validation anyway
        raise BackendUnavailableError("--quantize int8 needs onnxruntime's quantization tools: pip install onnxruntime") from exc
    from topv.export.onnx_io import WEIGHTS_FILE, share_weights

    work = folder / "_int8"
    work.mkdir()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantizer logs one INFO line per skipped MatMul on the root logger
    try:
        paths = {}
        for name, file in graph_files.items():
            if name in QUANTIZED_GRAPHS:
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


def quantize_export(folder: Path, manifest: Any, job: Any, recorder: Any, report: dict[str, Any]) -> Any:
    """Quantize in place, re-check the graphs, add the int8 comparison to ``report`` and return the new manifest.

    Raises:
        ToleranceError: the int8 logits drift beyond a cosine of ``MIN_LOGIT_COSINE`` from float32.
    """
    import json

    from topv.artifact.files import file_records
    from topv.errors import ToleranceError
    from topv.export.checks import open_exported
    from topv.export.onnx_io import check_graph

    stats = quantize_folder(folder, {name: g.file for name, g in manifest.graphs.items()})
    for g in manifest.graphs.values():
        check_graph(folder / g.file)
    manifest = manifest.replace(
        weights={"file": "weights.bin", **stats},
        quantization={"weights": "int8", "method": "onnxruntime dynamic quantization, per-channel symmetric int8",
                      "ops": ["DynamicQuantizeLinear", "MatMulInteger"], "graphs": list(QUANTIZED_GRAPHS)},
    )
    manifest.replace(files=file_records(folder)).write(folder)
    pipe = open_exported(folder, job, quantized=True)
    result = check_quantized(pipe.backend, recorder.calls)
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
    result["lines"] = lines
    report["int8"] = result
    (folder / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    for line in lines:
        log.info("%s", line)
    if not result["ok"]:
        raise ToleranceError(f"The int8 graphs drift too far from float32: logits cosine {result['min_logit_cosine']:.4f} < "
                             f"{MIN_LOGIT_COSINE}. Export without --quantize. The partial export is kept at {folder}.")
    return manifest
