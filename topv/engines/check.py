"""Static TensorRT check of an export folder (``topv-check``): needs the ``onnx`` package, not TensorRT.

topv emits a few dozen ONNX op types. :data:`ALLOWED_OPS` lists the ones it may emit, each of them
supported by the TensorRT 10.0 ONNX parser (onnx-tensorrt ``docs/operators.md``; 10.0 is the oldest
release topv builds with, so a pass holds for every 10.x). Beyond the list, the rules that matter for
topv's graphs:

* ``operator``: standard domain only (a custom domain needs a plugin); TopK's K a build-time constant
  below 3840 with ``sorted=1``; CumSum's axis and Reduce/Squeeze/Unsqueeze axes constant; EyeLike on a
  static shape; LayerNormalization's extra outputs unused; ScatterND without reduction.
* ``dtype``: no float64 anywhere (inputs, outputs, weights, constants, casts).
* ``dynamic-axis``: every dynamic input or output dimension is one of the manifest's declared axes.
* ``opset``: the default-domain opset within the parser's range (9..20 in TensorRT 10.0).
* ``external-data``: every externally stored weight lies inside the folder, in a file long enough for it.

Findings are errors (the graph will not parse or build); ``format_text`` names the node and its op.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from topv.artifact.names import AXES
from topv.errors import BackendUnavailableError

ALLOWED_OPS = frozenset(
    "Add And ArgMax Cast Clip Concat Constant ConstantOfShape Conv Cos CumSum Div Equal Erf Exp Expand EyeLike Flatten "
    "Gather GatherElements GatherND Gemm Greater GreaterOrEqual Identity LayerNormalization Less LessOrEqual Log MatMul "
    "Max Min Mul Neg Not Or Pow Range Reciprocal ReduceMax ReduceMean ReduceMin ReduceSum Relu Reshape ScatterElements "
    "ScatterND Shape Sigmoid Sin Slice Softmax Split Sqrt Squeeze Sub Tanh Tile TopK Transpose Trilu Unsqueeze Where".split()
)
OPSET_RANGE = (9, 20)  # TensorRT 10.0's ONNX parser
TOPK_MAX_K = 3840
_AXES_INPUT = {"ReduceSum": 13, "ReduceMax": 18, "ReduceMean": 18, "ReduceMin": 18, "Squeeze": 13, "Unsqueeze": 13}
_DOUBLE = 11  # TensorProto.DOUBLE


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str  # "node <name> (<op>)", a tensor name, or "(graph)"
    message: str


@dataclass
class GraphReport:
    graph: str
    file: str
    opset: int | None = None
    nodes: int = 0
    operators: dict[str, int] = field(default_factory=dict)
    external: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, check: str, subject: str, message: str) -> None:
        self.findings.append(Finding(check, subject, message))


@dataclass
class CheckReport:
    folder: str
    graphs: list[GraphReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.graphs)

    def to_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "ok": self.ok, "target": "TensorRT 10.x ONNX parser", "opset_range": list(OPSET_RANGE),
                "errors": sum(len(g.findings) for g in self.graphs), "graphs": [asdict(g) for g in self.graphs]}

    def format_text(self) -> str:
        lines = [f"topv-check {self.folder} --target tensorrt (TensorRT 10.x ONNX parser, opsets {OPSET_RANGE[0]}..{OPSET_RANGE[1]})"]
        for g in self.graphs:
            ops = ", ".join(f"{op} x{k}" for op, k in sorted(g.operators.items()))
            lines.append(f"  [{'ok ' if g.ok else 'FAIL'}] {g.graph:13s} opset {g.opset}, {g.nodes} nodes: {ops}")
            lines += [f"         {f.check}: {f.subject}: {f.message}" for f in g.findings]
        lines.append(f"result: {'OK' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError("topv-check reads the graphs with the onnx package: `pip install onnx` (TensorRT is not needed).") from exc
    return onnx


class _Graph:
    """What the rules need of one model: producers, constants and static shapes."""

    def __init__(self, onnx: Any, model: Any) -> None:
        self.model = model
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # noqa: BLE001 - unknown domains stop inference; the graph's own I/O shapes remain
            inferred = model
        self.shapes: dict[str, list[Any]] = {}
        for vi in list(inferred.graph.input) + list(inferred.graph.output) + list(inferred.graph.value_info):
            t = vi.type.tensor_type
            self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        self.initializers = {i.name: i for i in model.graph.initializer}
        self.constants = set(self.initializers)
        for node in model.graph.node:  # topologically sorted in a valid model
            if node.op_type == "Constant" or (node.input and all(not i or i in self.constants for i in node.input)):
                self.constants.update(o for o in node.output if o)
            elif node.op_type == "Shape" and all(isinstance(d, int) and d > 0 for d in self.shapes.get(node.input[0], [None])):
                self.constants.update(node.output)
        self.used = {i for node in model.graph.node for i in node.input} | {o.name for o in model.graph.output}

    def constant_value(self, name: str) -> Any:
        from onnx import numpy_helper

        if name in self.initializers and self.initializers[name].data_location != 1:
            return numpy_helper.to_array(self.initializers[name])
        for node in self.model.graph.node:
            if node.op_type == "Constant" and node.output[0] == name:
                attr = next((a for a in node.attribute if a.name == "value"), None)
                return numpy_helper.to_array(attr.t) if attr is not None else None
        return None


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


def _node_rules(g: _Graph, node: Any, opset: int) -> list[str]:
    """Why TensorRT's parser would refuse this node (empty when it will not)."""
    op, problems = node.op_type, []
    if op == "TopK":
        k = g.constant_value(node.input[1]) if len(node.input) > 1 else None
        if len(node.input) < 2 or node.input[1] not in g.constants:
            problems.append("K is not a build-time constant (TensorRT needs a static K)")
        elif k is not None and int(k.reshape(-1)[0]) >= TOPK_MAX_K:
            problems.append(f"K = {int(k.reshape(-1)[0])} is not below TensorRT's limit of {TOPK_MAX_K}")
        if _attr(node, "sorted", 1) != 1:
            problems.append("sorted must be 1")
    elif op == "CumSum" and node.input[1] not in g.constants:
        problems.append("the axis is not a build-time constant")
    elif op in _AXES_INPUT and opset >= _AXES_INPUT[op] and len(node.input) > 1 and node.input[1] and node.input[1] not in g.constants:
        problems.append("the axes are not a build-time constant")
    elif op == "EyeLike" and not all(isinstance(d, int) and d > 0 for d in g.shapes.get(node.input[0], [None])):
        problems.append("its input has no static shape")
    elif op == "LayerNormalization" and any(o in g.used for o in list(node.output)[1:] if o):
        problems.append("only the first output (Y) is supported")
    elif op == "ScatterND" and _attr(node, "reduction", b"none") not in (b"none", "none"):
        problems.append("a reduction is not supported")
    if op == "Cast" and _attr(node, "to") == _DOUBLE or op == "Constant" and _attr(node, "value") is not None and _attr(node, "value").data_type == _DOUBLE:
        problems.append("it produces float64, which TensorRT does not compute in")
    return problems


def check_graph(onnx: Any, model: Any, report: GraphReport, declared: set[str], folder: Path | None) -> None:
    """Every rule of the module docstring on one model; findings go to ``report``."""
    report.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if report.opset is None or not OPSET_RANGE[0] <= report.opset <= OPSET_RANGE[1]:
        report.add("opset", "(graph)", f"opset {report.opset} is outside the parser's range {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
    g = _Graph(onnx, model)
    for node in model.graph.node:
        report.nodes += 1
        report.operators[node.op_type] = report.operators.get(node.op_type, 0) + 1
        subject = f"node {node.name or '?'} ({node.domain + '.' if node.domain not in ('', 'ai.onnx') else ''}{node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            report.add("operator", subject, f"domain {node.domain!r} is not standard ONNX: TensorRT would need a plugin")
        elif node.op_type not in ALLOWED_OPS:
            report.add("operator", subject, f"{node.op_type} is not among the op types topv emits and has checked against "
                       "TensorRT's parser (int8 MatMulInteger graphs are for ONNX Runtime: build from an fp32/fp16 export)")
        for problem in _node_rules(g, node, report.opset or 0):
            report.add("operator", subject, problem)
    for value in list(model.graph.input) + list(model.graph.output):
        t = value.type.tensor_type
        if t.elem_type == _DOUBLE:
            report.add("dtype", value.name, "float64 graph input/output; TensorRT has no float64 tensors")
        for d in t.shape.dim:
            if not d.HasField("dim_value") and d.dim_param not in declared:
                report.add("dynamic-axis", value.name, f"dimension {d.dim_param or '?'!r} is neither fixed nor a declared axis {sorted(declared)}")
    for init in model.graph.initializer:
        if init.data_type == _DOUBLE:
            report.add("dtype", init.name, "float64 weight; TensorRT would cast it down to float32")
    _check_external(model, report, folder)


def check_model(model: Any, folder: Path | None = None, declared: set[str] = frozenset(AXES), name: str = "graph") -> GraphReport:
    """:func:`check_graph` on one in-memory model (external data resolved against ``folder``)."""
    report = GraphReport(name, f"{name}.onnx")
    check_graph(_import_onnx(), model, report, set(declared), folder)
    return report


def _check_external(model: Any, report: GraphReport, folder: Path | None) -> None:
    from topv.artifact.files import inside
    from topv.errors import ArtifactError

    files: dict[str, int] = {}
    count = 0
    for init in model.graph.initializer:
        if init.data_location != 1:
            continue
        count += 1
        info = {e.key: e.value for e in init.external_data}
        location, end = info.get("location", ""), int(info.get("offset", 0)) + int(info.get("length", 0))
        try:
            path = inside(folder, location, f"external data of {init.name}") if folder else Path(location)
        except ArtifactError as exc:
            report.add("external-data", init.name, str(exc))
            continue
        if not path.is_file():
            report.add("external-data", init.name, f"its file {location!r} is missing")
        elif path.stat().st_size < end:
            report.add("external-data", init.name, f"{location!r} is truncated ({path.stat().st_size} bytes, needs {end})")
        files[location] = max(files.get(location, 0), end)
    report.external = {"tensors": count, "files": sorted(files)}


def check_folder(folder: str | Path) -> CheckReport:
    """Check every graph of an export folder.

    Raises:
        ArtifactError: the folder or its manifest cannot be read.
        BackendUnavailableError: the onnx package is not installed.
    """
    from topv.artifact.files import inside
    from topv.artifact.manifest import read_manifest

    onnx = _import_onnx()
    folder = Path(folder)
    manifest = read_manifest(folder)
    report = CheckReport(str(folder))
    for name, info in manifest.graphs.items():
        graph = GraphReport(name, info.file)
        path = inside(folder, info.file, f"graphs.{name}.file")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - onnx raises protobuf's DecodeError and others; reported, not raised
            graph.add("file", info.file, f"cannot be read as ONNX ({type(exc).__name__}: {exc})")
        else:
            check_graph(onnx, model, graph, set(AXES), folder)
        report.graphs.append(graph)
    return report
