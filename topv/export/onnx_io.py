"""Writing graphs: torch -> ONNX, external weights shared across graphs, and structural checks."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from topv.errors import ExportError

log = logging.getLogger("topv.export")

WEIGHTS_FILE = "weights.bin"
_EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inside the graph
_ALIGN = 4096  # page-aligned offsets let ONNX Runtime memory-map shared weights


@dataclass
class GraphIO:
    """A graph's interface: names and shapes (ints, or symbolic axis names) and dtypes."""

    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)


def export_module(
    module: Any,
    args: tuple,
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None,
    opset: int,
) -> None:
    """Trace ``module`` on ``args`` and write a self-contained ONNX file (TorchScript exporter).

    The TorchScript-based exporter is used because it traces the data-dependent index arithmetic of
    the pruning graph into plain ``Range``/``Where``/``Gather`` ops and is fast; ``torch.onnx.export``'s
    dynamo path produces the same ops but takes minutes per decoder.
    """
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes or None,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many types; wrap with context
            raise ExportError(f"torch.onnx.export failed for {path.name}: {type(exc).__name__}: {exc}") from exc


def _tensor_bytes(tensor: Any) -> bytes:
    from onnx import numpy_helper

    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()


def share_weights(models: dict[str, Any], folder: Path, weights_name: str = WEIGHTS_FILE) -> dict[str, int]:
    """Move every initializer of >= 1 KiB into one external-data file, storing identical tensors once.

    Graphs that hold the same weights (the decode step and the prefill graphs share every decoder
    weight) then point at the same page-aligned bytes of ``weights_name``. Returns byte statistics.
    """
    from onnx import TensorProto

    seen: dict[str, tuple[int, int]] = {}
    total = stored = 0
    with open(folder / weights_name, "wb") as out:
        for model in models.values():
            for tensor in model.graph.initializer:
                data = _tensor_bytes(tensor)
                if len(data) < _EXTERNAL_MIN_BYTES:
                    continue
                total += len(data)
                digest = hashlib.sha256(data).hexdigest() + f":{tensor.data_type}"
                if digest not in seen:
                    offset = out.tell()
                    pad = (-offset) % _ALIGN
                    if pad:
                        out.write(b"\0" * pad)
                        offset += pad
                    out.write(data)
                    seen[digest] = (offset, len(data))
                    stored += len(data)
                offset, length = seen[digest]
                tensor.ClearField("raw_data")
                for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
                    tensor.ClearField(name)
                del tensor.external_data[:]
                for key, value in (("location", weights_name), ("offset", str(offset)), ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
                tensor.data_location = TensorProto.EXTERNAL
    return {"initializer_bytes": total, "stored_bytes": stored}


def load_for_sharing(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=True)


def save_graph(model: Any, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


def check_graph(path: Path) -> Any:
    """``onnx.checker`` with full shape inference, and standard-domain ops only. Returns the model."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path.name} fails onnx.checker with full shape inference: {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)
    custom = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(f"{path.name} uses non-standard operator domains {custom}; topv graphs must be plugin-free.")
    return model


def graph_io(model: Any) -> GraphIO:
    """Inputs and outputs of a graph as JSON-ready records."""
    from onnx.helper import tensor_dtype_to_np_dtype

    def records(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            out.append({"name": v.name, "shape": shape, "dtype": tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    return GraphIO(inputs=records(model.graph.input), outputs=records(model.graph.output))


def remove_tree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def fsync_dir(path: Path) -> None:  # pragma: no cover - best effort durability
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
