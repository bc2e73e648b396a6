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


def check_quantized(sessions: dict[str, Any], plans: dict[str, Any], samples: list, shapes: Any, layer: int) -> dict[str, Any]:
    """Cosine similarity of the int8 graphs' float outputs to the float32 modules', and equality of indices."""
    from topv.export.validate import module_chain

    rows = []
    for input_ids, pixel_values in samples:
        chain = module_chain(plans, input_ids, pixel_values, shapes, layer)
        for name, (feeds, want) in chain.items():
            got = sessions[name].run(None, feeds)
            for out_name, g, w in zip(plans[name].output_names, got, want):
                if np.issubdtype(np.asarray(w).dtype, np.integer):
                    rows.append({"graph": name, "output": out_name, "equal": bool(np.array_equal(g, w))})
                else:
                    rows.append({"graph": name, "output": out_name, "cosine": cosine(g, w)})
    logit_cos = [r["cosine"] for r in rows if r["output"] == "logits"]
    return {
        "checks": rows,
        "min_logit_cosine": min(logit_cos),
        "min_cosine": min(r["cosine"] for r in rows if "cosine" in r),
        "ok": min(logit_cos) >= MIN_LOGIT_COSINE,
        "threshold": MIN_LOGIT_COSINE,
    }
