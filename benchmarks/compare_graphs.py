"""Two export folders' graphs compared structurally (no weights loaded): operators in order, graph inputs and
outputs with their shapes, and the initializers' shapes, dtypes and stored bytes, matched by position.

    .venv/bin/python benchmarks/compare_graphs.py OLD_EXPORT NEW_EXPORT [--json out.json]

Initializer *names* are reported, not required to match: the streaming export names a Linear weight by its module
(``lm.layers.0.self_attn.q_proj.weight_t``) where constant folding named its copy ``onnx::MatMul_669``. Exit
status 1 when anything but names differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def describe(path: Path) -> dict[str, object]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph

    def io(values: object) -> list[tuple[str, int, list[object]]]:
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]) for v in values]

    def length(t: object) -> int:
        info = {e.key: e.value for e in t.external_data}
        return int(info["length"]) if "length" in info else len(t.raw_data)

    uses = {}  # initializer -> the (op type, input slot) of its first consumer: matches initializers across namings
    for node in g.node:
        for slot, name in enumerate(node.input):
            uses.setdefault(name, (node.op_type, slot, node.name))
    inits = sorted(((uses.get(t.name, ("", -1, "")), list(t.dims), t.data_type, length(t), t.name) for t in g.initializer),
                   key=lambda x: (x[0][2], x[0][1], x[1]))
    return {"ops": [n.op_type for n in g.node], "node_names": [n.name for n in g.node], "inputs": io(g.input),
            "outputs": io(g.output), "initializers": inits}


def compare(old: Path, new: Path) -> dict[str, object]:
    manifest = json.loads((new / "manifest.json").read_text())
    report: dict[str, object] = {}
    for name, info in manifest["graphs"].items():
        a, b = describe(old / info["file"]), describe(new / info["file"])
        ia, ib = a["initializers"], b["initializers"]
        report[name] = {
            "nodes": len(a["ops"]),
            "ops_equal": a["ops"] == b["ops"],
            "node_names_equal": a["node_names"] == b["node_names"],
            "inputs_equal": a["inputs"] == b["inputs"], "outputs_equal": a["outputs"] == b["outputs"],
            "initializers": [len(ia), len(ib)],  # type: ignore[arg-type]
            "initializer_shapes_equal": [x[:4] for x in ia] == [x[:4] for x in ib],  # type: ignore[index,union-attr]
            "initializer_names_differ": sum(x[4] != y[4] for x, y in zip(ia, ib)),  # type: ignore[arg-type,index]
            "initializer_bytes": [sum(x[3] for x in ia), sum(x[3] for x in ib)],  # type: ignore[index,union-attr]
        }
    sizes = [(old / "weights.bin").stat().st_size, (new / "weights.bin").stat().st_size]
    return {"graphs": report, "weights_bin_bytes": sizes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    result = compare(a.old, a.new)
    text = json.dumps(result, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    same = all(g["ops_equal"] and g["inputs_equal"] and g["outputs_equal"] and g["initializer_shapes_equal"]
               for g in result["graphs"].values())  # type: ignore[union-attr]
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
