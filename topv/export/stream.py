"""Streaming graph writing: each graph's structure from the TorchScript exporter without its weights, and the
weights written tensor by tensor from the PyTorch modules straight into one shared ``weights.bin``.

Why: with its weights, ``torch.onnx.export`` holds a graph's weights two to three more times (the protobuf, its
serialized bytes, and a transposed copy of every Linear weight made by constant folding), and sharing them
across graphs meant loading every graph back. Here the exporter runs with ``export_params=False`` and each
Linear presents its weight already transposed, as a view (:func:`matmul_weights`), so the traced graph is the
same ``MatMul(x, W^T)`` that constant folding produced, with no folded copy. Every weight input of the graph
then becomes an initializer whose bytes :class:`WeightWriter` appends to ``weights.bin`` once: a tensor already
written (the decoder's weights are in a prefill graph and in the decode step) or with the same bytes is stored
once. Peak memory is the model plus one tensor. Constants the exporter folds from weights (float16 graphs cast
LayerNorm weights to float32) come from the exporter's own table of weight inputs (:func:`_captured_params`), or,
on a torch without that pass, from one ordinary export of that graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any, Iterator

from topv.errors import ExportError

log = logging.getLogger("topv.export")

WEIGHTS_FILE = "weights.bin"
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inside the graph
ALIGN = 4096  # page-aligned offsets let ONNX Runtime and topv memory-map the weights
_TRANSPOSED = "weight_t"


def _matmul_forward(self: Any, x: Any) -> Any:
    import torch

    if x.dim() == 2 and self.bias is not None:  # exported as Gemm(transB=1) on the weight itself: nothing folded
        return torch.nn.functional.linear(x, self.weight, self.bias)
    y = torch.matmul(x, getattr(self, _TRANSPOSED))
    return y if self.bias is None else y + self.bias


@contextlib.contextmanager
def matmul_weights(module: Any) -> Iterator[None]:
    """Inside, every ``nn.Linear`` of ``module`` computes ``x @ weight_t (+ bias)``, ``weight_t`` being a
    transposed view of its weight (no copy): the ONNX graph is the one ``linear`` gives (``MatMul`` + ``Add``, or
    ``Gemm`` on a 2-D input with a bias, which needs no transposed weight), its weight input the transposed weight
    itself instead of a constant-folded copy."""
    from torch import nn

    linears = [m for m in module.modules() if isinstance(m, nn.Linear) and not hasattr(m, _TRANSPOSED)]
    for m in linears:
        setattr(m, _TRANSPOSED, nn.Parameter(m.weight.detach().t(), requires_grad=False))
        m.forward = types.MethodType(_matmul_forward, m)
    try:
        yield
    finally:
        for m in linears:
            delattr(m, _TRANSPOSED)
            del m.forward


class WeightWriter:
    """Appends tensors to ``folder/weights.bin`` (page-aligned), each distinct tensor once, and returns their
    initializers pointing there. Identity (the same storage, view and dtype) is checked before content (a SHA-256
    of the bytes), so a weight shared by several graphs is hashed once; the writer holds each tensor it has seen
    until :meth:`close` (views of the model's own weights cost nothing; folded constants are small), so that no
    address is reused by another tensor while it is a key."""

    def __init__(self, folder: Path, name: str = WEIGHTS_FILE) -> None:
        self.name = name
        self.out = open(Path(folder) / name, "wb")
        self.by_identity: dict[tuple, tuple[Any, int, int]] = {}  # -> (the tensor, offset, length)
        self.by_content: dict[str, tuple[int, int]] = {}
        self.initializer_bytes = self.stored_bytes = 0

    def _place(self, data: memoryview, digest: str) -> tuple[int, int]:
        if digest not in self.by_content:
            offset = self.out.tell()
            pad = (-offset) % ALIGN
            if pad:
                self.out.write(b"\0" * pad)
            self.out.write(data)
            self.by_content[digest] = (offset + pad, data.nbytes)
            self.stored_bytes += data.nbytes
        return self.by_content[digest]

    def initializer(self, name: str, tensor: Any) -> Any:
        """The ONNX initializer ``name`` of ``tensor`` (a torch tensor or numpy array): inline below 1 KiB, else
        stored externally in ``weights.bin``."""
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        source = None
        if hasattr(tensor, "detach"):  # torch: identity is the storage (on its own device), the view and the dtype
            source = tensor.detach()
            identity = (str(source.device), source.untyped_storage().data_ptr(), source.storage_offset(),
                        tuple(source.shape), tuple(source.stride()), str(source.dtype))
            array = source.cpu().contiguous().numpy()
        else:
            array = np.ascontiguousarray(tensor)
            identity = None
        if array.nbytes < EXTERNAL_MIN_BYTES:
            return numpy_helper.from_array(array, name)
        self.initializer_bytes += array.nbytes
        if identity is not None and identity in self.by_identity:
            _, offset, length = self.by_identity[identity]
        else:
            data = memoryview(array.reshape(-1)).cast("B")
            offset, length = self._place(data, hashlib.sha256(data).hexdigest() + f":{array.dtype.str}")
            if identity is not None:  # the tensor is held, so its address cannot be reused by another one meanwhile
                self.by_identity[identity] = (source, offset, length)
        proto = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=list(array.shape))
        for key, value in (("location", self.name), ("offset", str(offset)), ("length", str(length))):
            entry = proto.external_data.add()
            entry.key, entry.value = key, value
        proto.data_location = TensorProto.EXTERNAL
        return proto

    def stats(self) -> dict[str, int]:
        return {"initializer_bytes": self.initializer_bytes, "stored_bytes": self.stored_bytes}

    def close(self) -> None:
        self.by_identity.clear()  # the model's tensors (views of them) and folded constants are no longer held
        self.out.flush()
        self.out.close()


def _torch_export(module: Any, args: tuple, f: Any, graph: Any, opset: int, export_params: bool) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, f, input_names=list(graph.input_names), output_names=list(graph.output_names),
                              dynamic_axes=graph.dynamic_axes or None, opset_version=opset, do_constant_folding=True,
                              dynamo=False, export_params=export_params)
        except Exception as exc:  # the exporter raises many types; wrap with context
            raise ExportError(f"torch.onnx.export failed for {graph.file}: {type(exc).__name__}: {exc}") from exc


def release_exporter_state() -> None:
    """Let go of the weights the TorchScript exporter keeps after an export: state it holds until the next export
    starts still references the last graph's weights, so a dropped model's memory stayed allocated (measured: 14.6
    GiB of a 7B model after its last graph; ``tests/export/test_streaming.py``). A one-node export clears it."""
    import torch

    class PlusOne(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x + 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(PlusOne().eval(), (torch.zeros(1),), io.BytesIO(), opset_version=17, dynamo=False)


def _folded_constants(graph: Any, args: tuple, opset: int, names: list[str]) -> dict[str, Any]:
    """Values of constants the exporter folded from weights, from one ordinary export of the graph."""
    import onnx
    from onnx import numpy_helper

    log.warning("      %s: %d folded constant(s) (%s...) come from an ordinary export of this graph (more memory)",
                graph.file, len(names), names[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / graph.file
        _torch_export(graph.module, args, str(path), graph, opset, export_params=True)
        model = onnx.load(str(path), load_external_data=True)
        wanted = set(names)
        values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in wanted}
    missing = sorted(wanted - set(values))
    if missing:
        raise ExportError(f"{graph.file}: the exporter left weight inputs {missing[:5]} that are neither the module's "
                          "parameters nor folded constants (a topv bug).")
    return values


@contextlib.contextmanager
def _captured_params(into: dict[str, Any]) -> Iterator[None]:
    """Collect the exporter's final name -> tensor table of weight inputs (the module's tensors, and constants it
    folded from them, such as a LayerNorm weight cast to float32) from the last pass that sees it in the TorchScript
    exporter. Without that pass (another torch) nothing is collected and :func:`export_graph` falls back."""
    import torch

    original = getattr(torch._C, "_jit_pass_onnx_deduplicate_initializers", None)
    if original is None:
        yield
        return

    def spy(graph: Any, params: Any, training: Any) -> Any:
        result = original(graph, params, training)
        into.update(result)
        return result

    torch._C._jit_pass_onnx_deduplicate_initializers = spy
    try:
        yield
    finally:
        torch._C._jit_pass_onnx_deduplicate_initializers = original


def export_graph(graph: Any, args: tuple, writer: WeightWriter, opset: int) -> Any:
    """``graph`` (a :class:`~topv.graphs.build.GraphModule`) traced on ``args``; returns its ONNX model whose weights
    are initializers stored by ``writer``."""
    import onnx

    with matmul_weights(graph.module):
        buffer, captured = io.BytesIO(), {}
        with _captured_params(captured):
            _torch_export(graph.module, args, buffer, graph, opset, export_params=False)
        model = onnx.load_from_string(buffer.getvalue())
        del buffer
        tensors = {**dict(graph.module.named_buffers(remove_duplicate=False)),
                   **dict(graph.module.named_parameters(remove_duplicate=False)), **captured}
        declared = set(graph.input_names)
        weights = [v for v in model.graph.input if v.name not in declared]
        folded = [v.name for v in weights if v.name not in tensors]
        if folded:
            tensors.update(_folded_constants(graph, args, opset, folded))
        for value in weights:
            model.graph.initializer.append(writer.initializer(value.name, tensors[value.name]))
    release_exporter_state()
    keep = [v for v in model.graph.input if v.name in declared]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return model
