"""Static TensorRT compatibility check of an export folder: needs the ``onnx`` package, not TensorRT.

For every graph it checks, against the TensorRT 10.x ONNX parser (:mod:`topv.engines.trt_ops`):

* ``operator``: each node's domain, operator and the parser's restrictions that can be decided statically
  (TopK's K a build-time constant below 3840 and ``sorted=1``, CumSum's axis and Reduce/Squeeze/Unsqueeze
  axes constant, LayerNormalization/MaxPool extra outputs, pooling dilations, Resize modes, ...), and the
  data type of the tensor the operator works on against the types the table lists for it;
* ``dtype``: graph inputs/outputs, initializers, Constant values and inferred intermediate tensors (float64
  I/O and types TensorRT has no tensors for fail; float64 weights are cast down by the parser and reported);
* ``dynamic-axis``: every dynamic input dimension must be one of the manifest's declared axes, and the graph's
  inputs and outputs must be the ones the manifest lists (the engine profiles are derived from it);
* ``opset``: the default-domain opset inside the parser's range for the target release;
* ``external-data``: every externally stored initializer's file is present, inside the folder, long enough
  and readable, with the size its shape and type need.

Findings are ``error`` (the graph will not parse or build, or the runtime could not bind it), ``warning``
(it should build, with a caveat) or ``info``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

from topv.engines import trt_ops
from topv.engines.check_report import ERROR, INFO, WARNING, CheckReport, Finding, GraphReport
from topv.errors import BackendUnavailableError, ConfigError

CHECKS = ("manifest", "opset", "operator", "dtype", "dynamic-axis", "external-data", "profile")
DEFAULT_TARGET = "10.0"  # the oldest 10.x table: what passes here passes on every 10.x topv knows
EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
FLT_MAX = 3.4028234663852886e38
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}
REDUCE_OPS = {
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare",
}
# The opset from which each Reduce op takes ``axes`` as an input instead of an attribute.
REDUCE_AXES_INPUT_SINCE = {name: (13 if name == "ReduceSum" else 18) for name in REDUCE_OPS}
# Which tensor's type the table's "Supported Types" refers to: ("in", i) or ("out", i); default ("in", 0).
TYPED_TENSOR = {
    "Where": ("in", 1),
    "Constant": ("out", 0),
    "ConstantOfShape": ("out", 0),
    "RandomNormal": ("out", 0),
    "RandomUniform": ("out", 0),
    "EyeLike": ("out", 0),
    "DequantizeLinear": ("in", 0),
}


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError(
            "topv-check reads the ONNX graphs with the onnx package; install it with `pip install onnx` "
            "(TensorRT itself is not needed)."
        ) from exc
    return onnx


def resolve_target(trt_version: str | None) -> tuple[tuple[int, int], str, str]:
    """``(version, text, source)`` of the TensorRT release to check against.

    An explicit ``--trt-version`` wins; else the installed TensorRT (read from package metadata); else the
    oldest 10.x release topv has tables for, so a pass holds for every 10.x release it knows.

    Raises:
        ConfigError: not a TensorRT 10.x version.
    """
    source = "--trt-version"
    if trt_version is None:
        from topv.engines.trt_import import installed_tensorrt_version

        installed = installed_tensorrt_version()
        if installed is not None and installed.split(".")[0] == "10":
            trt_version, source = installed, "installed"
        else:
            trt_version, source = DEFAULT_TARGET, "default: the oldest 10.x release; pass --trt-version X.Y"
    try:
        version = trt_ops.parse_version(trt_version)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if version[0] != 10:
        raise ConfigError(
            f"--trt-version {trt_version}: topv encodes the ONNX parser rules of TensorRT 10.x only (and builds with "
            "TensorRT >= 10); pass a 10.x version such as 10.3."
        )
    return version, trt_version, source


# ---------------------------------------------------------------------------------------------- one graph
class _Graph:
    """Everything the rules need to know about one ONNX model."""

    def __init__(self, onnx: Any, model: Any, report: GraphReport) -> None:
        self.onnx = onnx
        self.model = model
        self.report = report
        self.types: dict[str, int] = {}
        self.shapes: dict[str, list[Any]] = {}
        self.producers: dict[str, Any] = {}
        self.initializers: dict[str, Any] = {}
        self.constant_nodes: dict[str, Any] = {}
        self.constants: set[str] = set()
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None
        )

    # -- types ---------------------------------------------------------------------------------------
    def infer(self) -> None:
        onnx = self.onnx
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model, check_type=False, strict_mode=False)
        except Exception as exc:  # noqa: BLE001 - inference is best effort
            self.report.add(
                WARNING, "dtype", "(graph)",
                f"ONNX shape inference failed ({exc}); types of intermediate tensors are not checked.",
            )
            inferred = self.model
        for graph in _graphs(inferred.graph):
            for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
                tt = vi.type.tensor_type
                if vi.type.HasField("tensor_type") and tt.elem_type:
                    self.types[vi.name] = tt.elem_type
                    if tt.HasField("shape"):
                        self.shapes[vi.name] = [
                            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
                        ]
            for init in graph.initializer:
                self.types.setdefault(init.name, init.data_type)
                self.shapes.setdefault(init.name, list(init.dims))
                self.initializers[init.name] = init
            for node in graph.node:
                for out in node.output:
                    self.producers[out] = node
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                    self.constant_nodes[node.output[0]] = node
                    tensor = _attr(node, "value")
                    if tensor is not None:
                        self.types.setdefault(node.output[0], tensor.data_type)
        self._propagate_constants()

    def _propagate_constants(self) -> None:
        consts = set(self.initializers) | set(self.constant_nodes)
        for node in self.model.graph.node:  # topologically sorted in a valid model
            if node.op_type in RANDOM_OPS or any(a.type in (5, 10) for a in node.attribute):  # GRAPH, GRAPHS
                continue
            inputs = [i for i in node.input if i]
            if node.op_type in ("Shape", "Size"):
                shape = self.shapes.get(node.input[0]) if node.input else None
                static = shape is not None and all(isinstance(d, int) and d > 0 for d in shape)
                if static:
                    consts.update(o for o in node.output if o)
                continue
            if inputs and all(i in consts for i in inputs):
                consts.update(o for o in node.output if o)
        self.constants = consts

    def type_name(self, tensor: str) -> str | None:
        code = self.types.get(tensor)
        if not code:
            return None
        return self.onnx.TensorProto.DataType.Name(code)

    def const_value(self, tensor: str) -> Any | None:
        """The value of an initializer stored in the model or of a Constant node (None otherwise)."""
        from onnx import numpy_helper

        proto = None
        if tensor in self.initializers and self.initializers[tensor].data_location != 1:
            proto = self.initializers[tensor]
        elif tensor in self.constant_nodes:
            node = self.constant_nodes[tensor]
            proto = _attr(node, "value")
            if proto is None:
                for name in ("value_int", "value_ints", "value_float", "value_floats"):
                    a = next((a for a in node.attribute if a.name == name), None)
                    if a is not None:
                        import numpy as np

                        return np.asarray(self.onnx.helper.get_attribute_value(a))
        if proto is None:
            return None
        try:
            return numpy_helper.to_array(proto)
        except Exception:  # noqa: BLE001
            return None


def _graphs(graph: Any) -> Iterator[Any]:
    """A graph and, recursively, the subgraphs of its If/Loop/Scan nodes."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.type == 5:  # GRAPH
                yield from _graphs(a.g)
            elif a.type == 10:  # GRAPHS
                for g in a.graphs:
                    yield from _graphs(g)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            if a.type == 4:  # TENSOR
                return a.t
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _label(node: Any) -> str:
    return f"{node.name or '(unnamed)'} ({node.op_type})"


def _node_input(node: Any, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _used_outputs(g: _Graph) -> set[str]:
    used: set[str] = set()
    for graph in _graphs(g.model.graph):
        for node in graph.node:
            used.update(node.input)
        used.update(o.name for o in graph.output)
    return used


# -- per-operator restrictions ------------------------------------------------------------------------
def _rules(g: _Graph, node: Any, used: set[str], version: tuple[int, int]) -> Iterator[tuple[str, str]]:
    """``(severity, message)`` for each restriction of the table (or of topv) that ``node`` breaks."""
    op = node.op_type
    row = trt_ops.OPERATORS.get(op)
    rule = f"TensorRT {trt_ops.SOURCE['table_version']} operators.md: {row.restrictions}" if row and row.restrictions else ""
    if op == "TopK":
        k = _node_input(node, 1)
        if k and k not in g.constants:
            yield ERROR, (
                f"K ({k}) is computed at run time. topv's graphs keep a fixed number of tokens: a data-dependent K "
                "gives kept_indices a data-dependent shape, which the static KV cache and the engine profiles cannot "
                "hold. Export K as a constant."
            )
        value = g.const_value(k) if k else None
        if value is not None and value.size == 1 and int(value.reshape(-1)[0]) >= trt_ops.TOPK_MAX_K:
            yield ERROR, f"K = {int(value.reshape(-1)[0])}; {rule}"
        if int(_attr(node, "sorted", 1)) != 1:
            yield ERROR, f"sorted=0; {rule}"
    elif op == "CumSum":
        axis = _node_input(node, 1)
        if axis and axis not in g.constants:
            yield ERROR, f"axis ({axis}) is not a build-time constant; {rule}"
    elif op in REDUCE_OPS:
        axes = _node_input(node, 1)
        if g.opset is not None and g.opset >= REDUCE_AXES_INPUT_SINCE[op] and axes and axes not in g.constants:
            yield ERROR, f"axes ({axes}) is computed at run time; {rule}"
    elif op in ("Squeeze", "Unsqueeze"):
        axes = _node_input(node, 1)
        if axes and axes not in g.constants:
            yield ERROR, f"axes ({axes}) is computed at run time; {rule}"
    elif op == "OneHot":
        depth = _node_input(node, 1)
        if depth and depth not in g.constants:
            yield ERROR, f"depth ({depth}) is computed at run time; {rule}"
    elif op in ("LayerNormalization", "MaxPool"):
        extra = [o for o in node.output[1:] if o and o in used]
        if extra:
            yield ERROR, f"uses the extra output(s) {', '.join(extra)}; {rule}"
    elif op == "Dropout":
        training = _node_input(node, 2)
        if training:
            value = g.const_value(training)
            if value is None or bool(value.reshape(-1)[0]):
                yield ERROR, f"is_training ({training}) is not a constant False; {rule}"
    elif op == "ScatterND":
        if _attr(node, "reduction", b"none") not in (b"none", "none"):
            yield ERROR, f"reduction={_attr(node, 'reduction')!r}; {rule}"
    elif op == "Resize":
        modes = {
            "mode": ({"nearest", "linear"}, "nearest"),
            "coordinate_transformation_mode": (
                {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"},
                "half_pixel",
            ),
            "nearest_mode": ({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}, "round_prefer_floor"),
            "keep_aspect_ratio_policy": ({"stretch"}, "stretch"),
        }
        for name, (allowed, default) in modes.items():
            value = _attr(node, name, default)
            value = value.decode() if isinstance(value, bytes) else value
            if value not in allowed:
                yield ERROR, f"{name}={value!r}; {rule}"
        if int(_attr(node, "antialias", 0)):
            yield ERROR, f"antialias=1; {rule}"
    elif op in ("AveragePool", "MaxPool", "LpPool"):
        dilations = _attr(node, "dilations", [])
        if dilations and any(int(d) != 1 for d in dilations):
            yield ERROR, f"dilations={list(dilations)}; {rule}"
    elif op == "Constant":
        for bad in ("sparse_value", "value_string", "value_strings"):
            if any(a.name == bad for a in node.attribute):
                yield ERROR, f"uses the {bad} attribute; {rule}"
    elif op == "Attention":
        if any(_node_input(node, i) for i in (4, 5, 6)):
            yield ERROR, f"uses past_key/past_value/nonpad_kv_seqlen; {rule}"
        if any(o and o in used for o in node.output[1:]):
            yield ERROR, f"uses present_key/present_value/qk_matmul_output; {rule}"
    elif op == "STFT":
        for i, what in ((1, "frame_step"), (2, "window")):
            name = _node_input(node, i)
            if name and name not in g.initializers:
                yield ERROR, f"{what} ({name}) is not an initializer; {rule}"


def _typed_tensor(node: Any) -> str | None:
    kind, index = TYPED_TENSOR.get(node.op_type, ("in", 0))
    names = node.input if kind == "in" else node.output
    return names[index] if len(names) > index and names[index] else None


def _check_operators(g: _Graph, version: tuple[int, int]) -> None:
    report = g.report
    used = _used_outputs(g)
    table = trt_ops.SOURCE["table_version"]
    seen_unknown_since: set[str] = set()
    for graph in _graphs(g.model.graph):
        for node in graph.node:
            domain = node.domain or ""
            key = node.op_type if domain in ("", "ai.onnx") else f"{domain}::{node.op_type}"
            report.operators[key] = report.operators.get(key, 0) + 1
            if domain not in ("", "ai.onnx"):
                report.add(
                    ERROR, "operator", _label(node),
                    f"operator from the custom domain {domain!r}: TensorRT's ONNX parser only imports it through a "
                    "plugin registered under that name, and topv's graphs are plugin-free (standard ONNX domain only).",
                )
                continue
            row = trt_ops.OPERATORS.get(node.op_type)
            if row is None:
                report.add(
                    ERROR, "operator", _label(node),
                    f"{node.op_type} is not in TensorRT's ONNX operator table ({table}); the parser has no importer for it.",
                )
                continue
            if not row.supported:
                note = f" ({row.restrictions})" if row.restrictions else ""
                report.add(ERROR, "operator", _label(node), f"{node.op_type} is not supported by TensorRT's ONNX parser{note}.")
                continue
            avail = trt_ops.available(row, version)
            if avail is False:
                report.add(
                    ERROR, "operator", _label(node),
                    f"{node.op_type} is parsed from TensorRT {row.since} on; the target is {version[0]}.{version[1]}.",
                )
            elif avail is None and node.op_type not in seen_unknown_since:
                seen_unknown_since.add(node.op_type)
                report.add(
                    WARNING, "operator", _label(node),
                    f"{node.op_type} is in the TensorRT {table} table; topv does not know whether "
                    f"{version[0]}.{version[1]} already parses it.",
                )
            for severity, message in _rules(g, node, used, version):
                report.add(severity, "operator", _label(node), message)
            _check_node_types(g, node, row)


def _check_node_types(g: _Graph, node: Any, row: trt_ops.OpSupport) -> None:
    tensor = _typed_tensor(node)
    type_name = g.type_name(tensor) if tensor else None
    if node.op_type in ("Cast", "CastLike"):
        to = _attr(node, "to") if node.op_type == "Cast" else None
        if to is not None:
            to_name = g.onnx.TensorProto.DataType.Name(int(to))
            if to_name == "DOUBLE":
                g.report.add(
                    WARNING, "dtype", _label(node),
                    "casts to float64; TensorRT has no float64 and casts to float32 instead (the parser maps DOUBLE to "
                    "FLOAT), so this part runs in single precision.",
                )
            elif to_name not in trt_ops.TRT_TYPE_NAMES:
                g.report.add(ERROR, "dtype", _label(node), f"casts to {to_name}, a type TensorRT has no tensors for.")
    if type_name is None:
        return
    if type_name in trt_ops.DOWNCAST_TYPES:
        type_name = trt_ops.DOWNCAST_TYPES[type_name]
    short = trt_ops.TRT_TYPE_NAMES.get(type_name)
    if short is None:
        g.report.add(
            ERROR, "operator", _label(node),
            f"works on {tensor} of type {type_name}, which TensorRT cannot represent.",
        )
    elif row.types and short not in row.types + trt_ops.TYPE_ADDENDA.get(node.op_type, ((), ""))[0]:
        g.report.add(
            WARNING, "operator", _label(node),
            f"works on {tensor} of type {short}; the operator table lists {', '.join(row.types)} for {node.op_type} "
            "(the table's type column lags the importers, so this may still build; topv-build will tell).",
        )


def _check_opset(g: _Graph, version: tuple[int, int]) -> None:
    lo, confirmed, possible = trt_ops.opset_range(version)
    report = g.report
    target = f"{version[0]}.{version[1]}"
    for imp in g.model.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            report.add(
                INFO if not any(n.domain == imp.domain for gr in _graphs(g.model.graph) for n in gr.node) else WARNING,
                "opset", f"domain {imp.domain!r}", f"imports opset {imp.version} of the non-standard domain {imp.domain!r}.",
            )
    if g.opset is None:
        report.add(ERROR, "opset", "opset_import", "the model imports no default-domain (ai.onnx) opset.")
        return
    if g.opset < lo:
        report.add(ERROR, "opset", f"opset {g.opset}", f"TensorRT {target} parses opsets {lo} to {confirmed}; re-export with a newer opset.")
    elif g.opset > possible:
        report.add(
            ERROR, "opset", f"opset {g.opset}",
            f"newer than any opset TensorRT {target} parses (at most {possible}); re-export with --opset {confirmed} or lower.",
        )
    elif g.opset > confirmed:
        report.add(
            WARNING, "opset", f"opset {g.opset}",
            f"TensorRT {target} is confirmed to parse opsets {lo} to {confirmed} (releases up to "
            f"{trt_ops.SOURCE['table_version']} reach {possible}); re-export with --opset {confirmed} to be sure.",
        )
    if g.model.ir_version > 10:
        report.add(
            WARNING, "opset", f"IR version {g.model.ir_version}",
            "newer than the IR version 10 of the ONNX releases bundled with TensorRT 10.0 to 10.6; older parsers may "
            "refuse the model.",
        )


def _check_dtypes(g: _Graph) -> None:
    report = g.report
    graph = g.model.graph
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for vi in values:
            if vi.name in g.initializers:
                continue
            name = g.onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type)
            if name == "DOUBLE":
                report.add(
                    ERROR, "dtype", f"{kind} {vi.name}",
                    f"is float64: TensorRT has no float64 tensors and would turn the graph {kind} into float32, so the "
                    "engine's binding would not match the manifest's dtype. Export it as float32.",
                )
            elif name not in trt_ops.TRT_TYPE_NAMES:
                report.add(ERROR, "dtype", f"{kind} {vi.name}", f"has type {name}, which TensorRT cannot bind.")
            elif trt_ops.TRT_TYPE_NAMES[name] in trt_ops.QUANTIZED_TYPES - {"INT8"}:
                report.add(WARNING, "dtype", f"{kind} {vi.name}", f"has the quantized type {name}.")
    # weights: initializers and Constant values
    weights: list[tuple[str, str, Any]] = [(name, f"initializer {name}", t) for name, t in g.initializers.items()]
    weights += [
        (name, f"Constant {node.name or name}", _attr(node, "value"))
        for name, node in g.constant_nodes.items()
        if _attr(node, "value") is not None
    ]
    for name, subject, tensor in weights:
        type_name = g.onnx.TensorProto.DataType.Name(tensor.data_type)
        if type_name == "DOUBLE":
            _check_double_weights(g, name, subject, tensor)
        elif type_name in ("UINT8",):
            continue  # the parser converts UINT8 weights to INT32
        elif type_name not in trt_ops.TRT_TYPE_NAMES:
            report.add(ERROR, "dtype", subject, f"has type {type_name}, which TensorRT cannot import.")
    # intermediate tensors
    for name, code in g.types.items():
        if name in g.initializers or name in g.constant_nodes:
            continue
        type_name = g.onnx.TensorProto.DataType.Name(code)
        if type_name in trt_ops.TRT_TYPE_NAMES or type_name == "UINT8":
            continue
        if type_name == "DOUBLE":
            producer = g.producers.get(name)
            if producer is None or producer.op_type in ("Cast", "CastLike") or name in g.constants:
                continue  # graph I/O, the Cast's own finding, or a constant-folded chain of downcast weights
            report.add(
                WARNING, "dtype", name,
                f"is float64 ({_label(producer)}); TensorRT computes it in float32.",
            )
        else:
            report.add(ERROR, "dtype", name, f"has type {type_name}, which TensorRT has no tensors for.")


def _check_double_weights(g: _Graph, name: str, subject: str, tensor: Any) -> None:
    import numpy as np

    values = g.const_value(name)
    if values is None and tensor.data_location == 1:
        values = _read_external(g, tensor, np.float64)
    size = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
    if values is None:
        g.report.add(
            WARNING, "dtype", subject,
            f"float64 ({size} values) that the parser casts down to float32 (clamping to +-FLT_MAX); values not read.",
        )
        return
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and float(np.abs(finite).max()) > FLT_MAX:
        g.report.add(
            ERROR, "dtype", subject,
            f"float64 values beyond float32's range (max |v| = {float(np.abs(finite).max()):.3g}); the parser casts "
            "them down to float32 and clamps them to +-FLT_MAX, which changes the result. Export them as float32.",
        )
    elif np.array_equal(values.astype(np.float32).astype(np.float64), values, equal_nan=True):
        g.report.add(
            INFO, "dtype", subject,
            f"float64 ({size} value(s)); the parser casts them down to float32, and every value is exactly "
            "representable there (no change).",
        )
    else:
        err = float(np.max(np.abs(values.astype(np.float32).astype(np.float64) - values)))
        g.report.add(
            WARNING, "dtype", subject,
            f"float64 ({size} value(s)) that the parser casts down to float32; rounding changes them by up to {err:.3g}.",
        )


def _read_external(g: _Graph, tensor: Any, dtype: Any) -> Any | None:
    import numpy as np

    folder = getattr(g, "folder", None)
    if folder is None:
        return None
    info = {e.key: e.value for e in tensor.external_data}
    try:
        path = Path(folder) / info["location"]
        offset, length = int(info.get("offset", 0)), int(info["length"])
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        return np.frombuffer(data, dtype=dtype)
    except (KeyError, ValueError, OSError):
        return None


def _check_axes(g: _Graph, declared: set[str], manifest_entry: dict[str, Any] | None) -> None:
    report = g.report
    graph = g.model.graph
    inputs = [vi for vi in graph.input if vi.name not in g.initializers]
    for vi in inputs:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            report.add(ERROR, "dynamic-axis", f"input {vi.name}", "has no shape (unknown rank); TensorRT needs the rank of every input.")
            continue
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if d.HasField("dim_param") and d.dim_param in declared:
                continue
            what = f"the symbolic axis {d.dim_param!r}" if d.dim_param else "an unnamed dynamic dimension"
            report.add(
                ERROR, "dynamic-axis", f"input {vi.name}",
                f"dimension {i} is {what}, which is not one of the manifest's declared axes "
                f"({', '.join(sorted(declared)) or 'none'}); TensorRT needs a min/opt/max range for every dynamic "
                "input dimension and topv derives them from those axes only.",
            )
    if manifest_entry is None:
        return
    import numpy as np

    want_in = {t["name"]: t for t in manifest_entry.get("inputs", [])}
    want_out = {t["name"]: t for t in manifest_entry.get("outputs", [])}
    have_in = {vi.name: vi for vi in inputs}
    have_out = {vi.name: vi for vi in graph.output}
    for kind, want, have in (("input", want_in, have_in), ("output", want_out, have_out)):
        for name in sorted(set(want) - set(have)):
            report.add(ERROR, "manifest", f"{kind} {name}", f"is listed in manifest.json but the graph has no such {kind}.")
        for name in sorted(set(have) - set(want)):
            report.add(ERROR, "manifest", f"{kind} {name}", f"is a graph {kind} that manifest.json does not list.")
        for name in sorted(set(want) & set(have)):
            vi, spec = have[name], want[name]
            elem = vi.type.tensor_type.elem_type
            try:
                dtype = np.dtype(g.onnx.helper.tensor_dtype_to_np_dtype(elem)).name
            except Exception:  # noqa: BLE001
                dtype = g.onnx.TensorProto.DataType.Name(elem)
            if spec.get("dtype") and dtype != spec["dtype"]:
                report.add(ERROR, "manifest", f"{kind} {name}", f"has dtype {dtype}; manifest.json says {spec['dtype']}.")
            if kind == "input":
                dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]
                if list(spec.get("shape", dims)) != dims:
                    report.add(ERROR, "manifest", f"{kind} {name}", f"has shape {dims}; manifest.json says {spec['shape']}.")


def _check_external(g: _Graph, folder: Path | None) -> None:
    report = g.report
    files: dict[str, Any] = {}
    count = total = 0
    for graph in _graphs(g.model.graph):
        for tensor in graph.initializer:
            if tensor.data_location != 1:
                continue
            count += 1
            subject = f"initializer {tensor.name}"
            info = {e.key: e.value for e in tensor.external_data}
            unexpected = sorted(set(info) - EXTERNAL_KEYS)
            if unexpected:
                report.add(ERROR, "external-data", subject, f"has unexpected external-data keys {unexpected}; the parser rejects them.")
            location = info.get("location")
            if not location:
                report.add(ERROR, "external-data", subject, "is stored externally but names no file (no 'location').")
                continue
            norm = Path(location)
            if norm.is_absolute() or ".." in norm.parts:
                report.add(
                    ERROR, "external-data", subject,
                    f"points to {location!r}; the parser only reads files inside the ONNX file's folder (no absolute "
                    "paths, no '../').",
                )
                continue
            try:
                offset = int(info.get("offset", 0))
                length = int(info["length"]) if "length" in info else None
            except ValueError:
                report.add(ERROR, "external-data", subject, f"has a non-numeric offset/length: {info}.")
                continue
            expected = _tensor_bytes(g, tensor)
            if length is None:
                report.add(WARNING, "external-data", subject, "has no 'length'; the parser then reads to the end of the file.")
            elif expected is not None and length != expected:
                report.add(
                    ERROR, "external-data", subject,
                    f"declares {length} bytes but its shape {list(tensor.dims)} needs {expected}; the parser refuses "
                    "unexpected external weight sizes.",
                )
            total += length or 0
            if folder is None:
                continue
            path = folder / location
            if location not in files:
                try:
                    files[location] = (path.stat().st_size, open(path, "rb"))
                except OSError as exc:
                    files[location] = (None, None)
                    report.add(ERROR, "external-data", location, f"cannot be opened ({exc.strerror or exc}); re-export or copy the folder again.")
            size, handle = files[location]
            if handle is None:
                continue
            end = offset + (length or 0)
            if end > size:
                report.add(
                    ERROR, "external-data", subject,
                    f"needs bytes {offset}..{end} of {location}, which has {size} bytes (truncated?).",
                )
                continue
            if length:
                try:
                    handle.seek(end - 1)
                    if len(handle.read(1)) != 1:
                        raise OSError("short read")
                except OSError as exc:
                    report.add(ERROR, "external-data", subject, f"cannot be read from {location} ({exc}).")
    for _, handle in files.values():
        if handle is not None:
            handle.close()
    g.report.external = {"tensors": count, "bytes": total, "files": sorted(files)}


def _tensor_bytes(g: _Graph, tensor: Any) -> int | None:
    import numpy as np

    try:
        itemsize = np.dtype(g.onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:  # noqa: BLE001
        return None
    name = g.onnx.TensorProto.DataType.Name(tensor.data_type)
    if name in ("INT4", "UINT4", "FLOAT4E2M1"):
        return None
    return int(math.prod(tensor.dims)) * itemsize


def check_graph(
    source: str | Path | Any,
    *,
    graph: str = "graph",
    declared_axes: set[str] | frozenset[str] = frozenset(),
    manifest_entry: dict[str, Any] | None = None,
    trt_version: str | tuple[int, int] = DEFAULT_TARGET,
    folder: str | Path | None = None,
) -> GraphReport:
    """Check one ONNX model (a path, or a ``ModelProto`` with ``folder`` for its external data)."""
    onnx = _import_onnx()
    version = trt_ops.parse_version(trt_version) if isinstance(trt_version, str) else trt_version
    if isinstance(source, (str, Path)):
        path = Path(source)
        report = GraphReport(graph, path.name)
        folder = path.parent if folder is None else folder
        if not path.is_file():
            report.add(ERROR, "manifest", path.name, "is missing; re-export the model.")
            return report
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
            report.add(ERROR, "manifest", path.name, f"is not a readable ONNX model ({exc}).")
            return report
    else:
        model = source
        report = GraphReport(graph, f"{graph}.onnx")
    g = _Graph(onnx, model, report)
    g.folder = None if folder is None else Path(folder)  # type: ignore[attr-defined]
    report.opset = g.opset
    report.ir_version = int(model.ir_version)
    report.nodes = sum(len(gr.node) for gr in _graphs(model.graph))
    g.infer()
    _check_opset(g, version)
    _check_operators(g, version)
    _check_dtypes(g)
    _check_axes(g, set(declared_axes), manifest_entry)
    _check_external(g, None if folder is None else Path(folder))
    return report


def check_folder(folder: str | Path, *, trt_version: str | None = None) -> CheckReport:
    """Check every graph of an export folder against TensorRT ``trt_version`` (see :func:`resolve_target`).

    Raises:
        ArtifactError / IncompatibleArtifactError: the folder is not a readable topv export.
        BackendUnavailableError: the onnx package is missing.
        ConfigError: ``trt_version`` is not a 10.x version.
    """
    from topv.engines.profiles import derive_profiles
    from topv.errors import ArtifactError
    from topv.manifest import read_manifest

    folder = Path(folder)
    version, text, source = resolve_target(trt_version)
    manifest = read_manifest(folder)
    _import_onnx()
    report = CheckReport(str(folder), text, source)
    declared = set(manifest.get("static_shapes", {}).get("axes", {}))
    try:
        derive_profiles(manifest)
    except ArtifactError as exc:
        report.findings.append(Finding(ERROR, "profile", "static_shapes", str(exc)))
    for name, entry in manifest["graphs"].items():
        report.graphs.append(
            check_graph(
                folder / entry["file"], graph=name, declared_axes=declared, manifest_entry=entry,
                trt_version=version, folder=folder,
            )
        )
    return report
