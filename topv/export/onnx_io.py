"""Writing graphs: torch -> ONNX, external weights shared across graphs, and structural checks."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from topv.errors import ExportError

log = logging.getLogger("topv.export")

if TYPE_CHECKING:  # pragma: no cover
    from topv.artifact.manifest import GraphInfo



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


def share_weights(models: dict[str, Any], folder: Path) -> dict[str, int]:
    """Move every initializer of >= 1 KiB of these (loaded) graphs into ``folder/weights.bin``, identical tensors once
    (:class:`~topv.export.stream.WeightWriter`). The export itself streams its weights there from the model; this
    serves graphs rewritten after it (int8 quantization). Returns byte statistics."""
    from onnx import numpy_helper

    from topv.export.stream import WeightWriter

    writer = WeightWriter(folder)
    try:
        for model in models.values():
            for tensor in model.graph.initializer:
                tensor.CopyFrom(writer.initializer(tensor.name, numpy_helper.to_array(tensor)))
    finally:
        writer.close()
    return writer.stats()


def set_io_shapes(model: Any, shapes: dict[str, tuple[int | str, ...]]) -> None:
    """Declare every graph input's and output's shape: fixed sizes, and the named dynamic axes.

    The exporter's own guesses name some fixed dimensions symbolically (``Addhidden_states_dim_0``);
    the runtime sizes its buffers from these declarations, and the checker verifies them.
    """
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in shapes:
            raise ExportError(f"graph {model.graph.name!r}: no declared shape for {value.name!r} (a topv bug)")
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for d in shapes[value.name]:
            dim = dims.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = int(d)


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


def graph_info(model: Any, file: str) -> "GraphInfo":
    """A checked graph's interface for the manifest; every dimension must be fixed or a declared axis.

    Raises:
        ExportError: an input or output has a dimension the runtime could not size (an undeclared symbol).
    """
    from onnx.helper import tensor_dtype_to_np_dtype

    from topv.artifact.manifest import GraphInfo, TensorInfo
    from topv.artifact.names import AXES

    def records(values: Any) -> tuple[TensorInfo, ...]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim)
            bad = [d for d in shape if not (isinstance(d, int) and d > 0) and d not in AXES]
            if bad:
                raise ExportError(f"{file}: {v.name} has dimensions {bad} that are neither fixed nor one of {AXES}; "
                                  "this is a topv bug (a dynamic axis was not declared).")
            out.append(TensorInfo(v.name, shape, tensor_dtype_to_np_dtype(t.elem_type).name))
        return tuple(out)

    return GraphInfo(file, records(model.graph.input), records(model.graph.output))
