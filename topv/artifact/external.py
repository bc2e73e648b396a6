"""The externally stored weights a graph of an export folder refers to, checked to lie inside the folder.

ONNX Runtime refuses external data outside a model's folder by itself; other runtimes (OpenVINO's ONNX
frontend) and topv's own memory maps read the ``location`` a graph names, so they go through this first.
Reading the initializer table needs the ``onnx`` package (it is in ``topv[runtime]`` and ``topv[openvino]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topv.errors import ArtifactError, BackendUnavailableError

REEXPORT = "The folder is damaged or was edited; re-export the model."


@dataclass(frozen=True)
class ExternalTensor:
    name: str
    path: Path  # the data file, inside the export folder
    offset: int
    length: int
    dtype: Any  # numpy dtype
    shape: tuple[int, ...]


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError("Reading an export's weight table needs the onnx package: `pip install onnx` "
                                      "(it is in topv[runtime] and topv[openvino]).") from exc
    return onnx


def external_tensors(folder: Path, graph_path: Path) -> list[ExternalTensor]:
    """Every initializer of ``graph_path`` stored outside the graph file, with its place checked.

    Raises:
        ArtifactError: the graph cannot be read, or a tensor's data lies outside the folder or its file.
    """
    import numpy as np

    from topv.artifact.files import inside

    onnx = import_onnx()
    try:
        model = onnx.load(str(graph_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError; re-raised typed
        raise ArtifactError(f"{graph_path.name} is not a readable ONNX graph ({type(exc).__name__}). {REEXPORT}") from None
    out = []
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in init.external_data}
        if "location" not in info:
            raise ArtifactError(f"{graph_path.name}: weight {init.name} is stored externally without a location. {REEXPORT}")
        path = inside(folder, info["location"], f"{graph_path.name}'s external data")
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
        shape = tuple(int(d) for d in init.dims)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        offset, length = int(info.get("offset", 0)), int(info.get("length", expected))
        size = path.stat().st_size if path.is_file() else -1
        if offset < 0 or length != expected or offset + length > size:
            raise ArtifactError(f"{graph_path.name}: weight {init.name} ({length} bytes at {offset}) does not fit "
                                f"{info['location']} ({size} bytes) or its shape {list(shape)}. {REEXPORT}")
        out.append(ExternalTensor(init.name, path, offset, length, dtype, shape))
    return out
