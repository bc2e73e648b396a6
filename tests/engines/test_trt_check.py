"""topv-check: every graph topv-export writes passes; crafted bad graphs fail naming the node and its op."""

import json

import numpy as np
import pytest

from topv.engines.check import check_folder, check_model
from topv.engines.check_cli import main as check_main


def _errors(report, check=None):
    return [f for f in report.findings if check is None or f.check == check]


# ------------------------------------------------------------------------------------------ real exports
@pytest.mark.parametrize("which", ["pruned_export", "unpruned_export", "full_fp16_export"])
def test_every_exported_graph_passes(request, which):
    folder = request.getfixturevalue(which)
    report = check_folder(folder)
    assert report.ok, report.format_text()
    by_name = {g.graph: g for g in report.graphs}
    assert set(by_name) >= {"vision", "prefill_head", "prefill_tail", "decode_step"}
    assert ("prune" in by_name) == (which != "unpruned_export")
    for g in report.graphs:
        assert g.opset == 17 and g.nodes > 0
    if "prune" in by_name:
        assert by_name["prune"].operators.get("TopK", 0) >= 1
    # the shared weights are external data of the big graphs and were all found
    assert by_name["decode_step"].external["tensors"] > 0
    assert by_name["decode_step"].external["files"] == ["weights.bin"]


def test_cli_passes_and_prints_a_table(pruned_export, capsys):
    assert check_main([str(pruned_export), "--target", "tensorrt"]) == 0
    out = capsys.readouterr().out
    assert "TensorRT 10.x" in out and "prefill_head" in out and "result: OK" in out


def test_cli_json(unpruned_export, capsys):
    assert check_main([str(unpruned_export), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["errors"] == 0
    assert {g["graph"] for g in data["graphs"]} == {"vision", "prefill_head", "prefill_tail", "decode_step"}


def test_cli_refuses_a_missing_folder(tmp_path, capsys):
    assert check_main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ crafted folders
def test_cli_fails_on_a_custom_op_in_a_folder(pruned_export, copy_export, capsys):
    import onnx

    folder = copy_export(pruned_export)
    model = onnx.load(str(folder / "vision.onnx"), load_external_data=False)
    node = model.graph.node[-1]
    node.domain, node.op_type = "com.example", "FancyGelu"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    onnx.save(model, str(folder / "vision.onnx"))
    assert check_main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "com.example" in out and node.name in out and "plugin" in out


def test_missing_and_truncated_weights_fail_the_external_data_check(pruned_export, copy_export):
    folder = copy_export(pruned_export)
    data = (folder / "weights.bin").read_bytes()
    (folder / "weights.bin").write_bytes(data[: len(data) // 2])
    msgs = [f.message for g in check_folder(folder).graphs for f in _errors(g, "external-data")]
    assert msgs and any("truncated" in m for m in msgs)
    (folder / "weights.bin").unlink()
    report = check_folder(folder)
    failing = {g.graph for g in report.graphs if not g.ok}
    assert {"vision", "prefill_head", "prefill_tail", "decode_step"} <= failing
    assert all(f.check == "external-data" and "missing" in f.message for g in report.graphs for f in g.findings)


# ------------------------------------------------------------------------------------------ crafted graphs
def test_crafted_baseline_passes(craft):
    report = check_model(craft.relu())
    assert report.ok, report.findings


def test_custom_domain_op(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("MyPluginOp", ["x"], ["y"], name="plugin_node", domain="com.example")],
        [craft.value("x", T.FLOAT, [1, 4])], [craft.value("y", T.FLOAT, [1, 4])], domains=["com.example"],
    )
    (err,) = _errors(check_model(model))
    assert err.check == "operator" and "plugin_node" in err.subject and "com.example" in err.message


@pytest.mark.parametrize("op,text", [("Unique", "not among the op types topv emits"), ("MatMulInteger", "int8")])
def test_ops_outside_the_list_fail_naming_node_and_op(craft, op, text):
    h, T = craft.helper, craft.T
    inputs = ["x"] if op == "Unique" else ["x", "x"]
    elem = T.FLOAT if op == "Unique" else T.UINT8
    model = craft.model([h.make_node(op, inputs, ["y"], name="odd")], [craft.value("x", elem, [4, 4])],
                        [craft.value("y", T.FLOAT if op == "Unique" else T.INT32, [4, 4])])
    errs = _errors(check_model(model), "operator")
    assert errs and errs[0].subject == f"node odd ({op})" and text in errs[0].message


def test_float64_anywhere_fails(craft):
    h, T = craft.helper, craft.T
    io = craft.model([h.make_node("Relu", ["x"], ["y"], name="relu")],
                     [craft.value("x", T.DOUBLE, [1, 4])], [craft.value("y", T.DOUBLE, [1, 4])])
    assert {e.subject for e in _errors(check_model(io), "dtype")} == {"x", "y"}
    weight = h.make_tensor("w", T.DOUBLE, [2], [1.0, 2.0])
    init = craft.model([h.make_node("Cast", ["w"], ["wf"], to=T.FLOAT, name="cast_w"), h.make_node("Add", ["x", "wf"], ["y"], name="add")],
                       [craft.value("x", T.FLOAT, [2])], [craft.value("y", T.FLOAT, [2])], initializers=[weight])
    assert [e.subject for e in _errors(check_model(init), "dtype")] == ["w"]
    cast = craft.model([h.make_node("Cast", ["x"], ["d"], to=T.DOUBLE, name="up"), h.make_node("Cast", ["d"], ["y"], to=T.FLOAT, name="down")],
                       [craft.value("x", T.FLOAT, [3])], [craft.value("y", T.FLOAT, [3])])
    errs = _errors(check_model(cast), "operator")
    assert [e.subject for e in errs] == ["node up (Cast)"] and "float64" in errs[0].message


@pytest.mark.parametrize("dims", [[1, "batch", 4], [1, None, 4]])
def test_undeclared_dynamic_axis(craft, dims):
    h, T = craft.helper, craft.T
    model = craft.model([h.make_node("Relu", ["x"], ["y"], name="relu")], [craft.value("x", T.FLOAT, dims)],
                        [craft.value("y", T.FLOAT, dims)])
    errs = _errors(check_model(model), "dynamic-axis")
    assert {e.subject for e in errs} == {"x", "y"} and "sequence" in errs[0].message


@pytest.mark.parametrize("opset,ok", [(21, False), (8, False), (17, True), (20, True)])
def test_opset_range(craft, opset, ok):
    assert (not _errors(check_model(craft.relu(opset=opset)), "opset")) == ok


def _topk(craft, k_from_input=False, k=3, sorted_=1):
    h, T = craft.helper, craft.T
    inputs = [craft.value("scores", T.FLOAT, [1, 16])]
    inits = []
    if k_from_input:
        inputs.append(craft.value("k", T.INT64, [1]))
    else:
        inits.append(h.make_tensor("k", T.INT64, [1], [k]))
    node = h.make_node("TopK", ["scores", "k"], ["values", "indices"], name="topk", sorted=sorted_)
    return craft.model([node], inputs, [craft.value("indices", T.INT64, [1, min(k, 16)])], initializers=inits)


@pytest.mark.parametrize("kwargs,text", [({}, None), (dict(k_from_input=True), "build-time constant"),
                                         (dict(k=4000), "3840"), (dict(sorted_=0), "sorted must be 1")])
def test_topk_rules(craft, kwargs, text):
    errs = _errors(check_model(_topk(craft, **kwargs)), "operator")
    if text is None:
        assert not errs
    else:
        assert len(errs) == 1 and errs[0].subject == "node topk (TopK)" and text in errs[0].message


def test_topk_k_through_constant_arithmetic_is_constant(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("Constant", [], ["k0"], value=h.make_tensor("v", T.INT64, [1], [2]), name="c"),
         h.make_node("Add", ["k0", "k0"], ["k"], name="add"),
         h.make_node("TopK", ["scores", "k"], ["values", "indices"], name="topk")],
        [craft.value("scores", T.FLOAT, [1, 16])], [craft.value("indices", T.INT64, [1, 4])],
    )
    # the value of a computed K is unknown to this static check, but it is a build-time constant: no error
    assert not [e for e in _errors(check_model(model)) if "constant" in e.message]


def test_cumsum_axis_must_be_constant(craft):
    h, T = craft.helper, craft.T
    model = craft.model([h.make_node("CumSum", ["x", "axis"], ["y"], name="cumsum")],
                        [craft.value("x", T.INT64, [1, 8]), craft.value("axis", T.INT64, [])], [craft.value("y", T.INT64, [1, 8])])
    errs = _errors(check_model(model), "operator")
    assert len(errs) == 1 and "build-time constant" in errs[0].message


def test_layernorm_extra_outputs_fail(craft):
    h, T = craft.helper, craft.T
    scale = h.make_tensor("scale", T.FLOAT, [4], [1.0] * 4)
    model = craft.model([h.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"], name="ln")],
                        [craft.value("x", T.FLOAT, [2, 4])], [craft.value("y", T.FLOAT, [2, 4]), craft.value("mean", T.FLOAT, [2, 1])],
                        initializers=[scale])
    errs = _errors(check_model(model), "operator")
    assert len(errs) == 1 and "first output" in errs[0].message


def _external_model(craft, tmp_path, location, write=64):
    h, T = craft.helper, craft.T
    w = h.make_tensor("w", T.FLOAT, [16], np.zeros(16, np.float32).tobytes(), raw=True)
    w.ClearField("raw_data")
    w.data_location = T.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    if write:
        (tmp_path / "w.bin").write_bytes(b"\0" * write)
    return craft.model([h.make_node("Add", ["x", "w"], ["y"], name="add")], [craft.value("x", T.FLOAT, [16])],
                       [craft.value("y", T.FLOAT, [16])], initializers=[w])


@pytest.mark.parametrize("location,write,text", [("w.bin", 64, None), ("w.bin", 0, "missing"), ("w.bin", 32, "truncated"),
                                                 ("../w.bin", 64, "outside the export folder")])
def test_external_data(craft, tmp_path, location, write, text):
    folder = tmp_path / "export"
    folder.mkdir()
    report = check_model(_external_model(craft, folder if "../" not in location else folder, location, write), folder=folder)
    errs = _errors(report, "external-data")
    if text is None:
        assert report.ok and report.external == {"tensors": 1, "files": ["w.bin"]}
    else:
        assert errs and text in errs[0].message, report.findings
