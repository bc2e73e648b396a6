"""topv-check: every graph topv-export writes passes; crafted bad graphs fail with a useful report."""

import json

import numpy as np
import pytest

from topv.engines.check import ERROR, INFO, WARNING, check_folder, check_graph
from topv.engines.check_cli import main as check_main

SEQ = {"sequence"}


def _errors(report, check=None):
    return [f for f in report.findings if f.severity == ERROR and (check is None or f.check == check)]


def _only(report, severity):
    return [f for f in report.findings if f.severity == severity]


# ------------------------------------------------------------------------------------------ real exports
@pytest.mark.parametrize("which", ["pruned_export", "unpruned_export", "full_fp16_export"])
@pytest.mark.parametrize("target", ["10.0", "10.15"])
def test_every_exported_graph_passes(request, which, target):
    folder = request.getfixturevalue(which)
    report = check_folder(folder, trt_version=target)
    assert report.ok, report.format_text()
    assert report.count(WARNING) == 0, report.format_text()
    graphs = {g.graph for g in report.graphs}
    assert graphs >= {"vision", "prefill_head", "prefill_tail", "decode_step"}
    assert ("prune" in graphs) == (which != "unpruned_export")
    for g in report.graphs:
        assert g.opset == 17 and g.nodes > 0
    by_name = {g.graph: g for g in report.graphs}
    if "prune" in by_name:
        assert by_name["prune"].operators.get("TopK", 0) >= 1
    # the shared weights are external data of the big graphs and were all found and read
    assert by_name["decode_step"].external["tensors"] > 0
    assert by_name["decode_step"].external["files"] == ["weights.bin"]


def test_pruned_export_holds_no_float64_tensor(pruned_export):
    # The recovery positions are computed in int64, so no graph carries a float64 constant for the
    # parser to cast (float64 weights in other graphs are covered by the crafted-graph tests).
    report = check_folder(pruned_export, trt_version="10.0")
    findings = [f for g in report.graphs for f in g.findings]
    assert not any(f.check == "dtype" and "float64" in f.message for f in findings)


def test_cli_passes_and_prints_a_table(pruned_export, capsys):
    assert check_main([str(pruned_export), "--target", "tensorrt", "--trt-version", "10.3"]) == 0
    out = capsys.readouterr().out
    assert "TensorRT 10.3" in out and "prefill_head" in out and "result: OK" in out


def test_cli_json(unpruned_export, capsys):
    assert check_main([str(unpruned_export), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["passed"] and data["errors"] == 0
    assert data["operator_table"]["table_version"] == "10.15"
    assert {g["graph"] for g in data["graphs"]} == {"vision", "prefill_head", "prefill_tail", "decode_step"}


def test_cli_refuses_other_major_versions_and_non_folders(pruned_export, tmp_path, capsys):
    assert check_main([str(pruned_export), "--trt-version", "8.6"]) == 2
    assert "10.x" in capsys.readouterr().err
    assert check_main([str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ crafted folders
def test_cli_fails_on_a_custom_op_in_a_folder(pruned_export, copy_export, craft, capsys):
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


def test_missing_weights_fail_the_external_data_check(pruned_export, copy_export, capsys):
    folder = copy_export(pruned_export)
    (folder / "weights.bin").unlink()
    report = check_folder(folder)
    assert not report.ok
    failing = {g.graph for g in report.graphs if not g.ok}
    assert {"vision", "prefill_head", "prefill_tail", "decode_step"} <= failing
    assert all(f.check == "external-data" for g in report.graphs for f in _errors(g))
    assert check_main([str(folder), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_truncated_weights_are_found(pruned_export, copy_export):
    folder = copy_export(pruned_export)
    data = (folder / "weights.bin").read_bytes()
    (folder / "weights.bin").write_bytes(data[: len(data) // 2])
    report = check_folder(folder)
    msgs = [f.message for g in report.graphs for f in _errors(g, "external-data")]
    assert msgs and any("truncated" in m for m in msgs)


def test_strict_turns_warnings_into_failures(pruned_export, copy_export, capsys):
    import onnx
    from onnx import TensorProto, helper

    folder = copy_export(pruned_export)
    model = onnx.load(str(folder / "vision.onnx"), load_external_data=False)
    out = model.graph.output[0].name
    producer = next(n for n in model.graph.node if out in n.output)
    producer.output[list(producer.output).index(out)] = "features_f32"
    model.graph.node.extend([
        helper.make_node("Cast", ["features_f32"], ["features_f64"], to=TensorProto.DOUBLE, name="to_double"),
        helper.make_node("Cast", ["features_f64"], [out], to=TensorProto.FLOAT, name="back_to_float"),
    ])
    onnx.save(model, str(folder / "vision.onnx"))
    assert check_main([str(folder), "-q"]) == 0
    assert "to_double" in capsys.readouterr().out
    assert check_main([str(folder), "--strict"]) == 1


# ------------------------------------------------------------------------------------------ crafted graphs
def test_crafted_baseline_passes(craft):
    report = check_graph(craft.relu(), declared_axes=SEQ)
    assert report.ok and not report.findings, report.findings


def test_custom_domain_op(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("MyPluginOp", ["x"], ["y"], name="plugin_node", domain="com.example")],
        [craft.value("x", T.FLOAT, [1, 4])], [craft.value("y", T.FLOAT, [1, 4])], domains=["com.example"],
    )
    (err,) = _errors(check_graph(model))
    assert err.check == "operator" and "plugin_node" in err.subject and "com.example" in err.message


def test_unsupported_standard_op(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("Unique", ["x"], ["y"], name="uniq")],
        [craft.value("x", T.FLOAT, [6])], [craft.value("y", T.FLOAT, [None])],
    )
    errs = _errors(check_graph(model), "operator")
    assert errs and "Unique is not supported" in errs[0].message


def test_float64_input_fails(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("Relu", ["x"], ["y"], name="relu")],
        [craft.value("x", T.DOUBLE, [1, 4])], [craft.value("y", T.DOUBLE, [1, 4])],
    )
    errs = _errors(check_graph(model), "dtype")
    assert {e.subject for e in errs} == {"input x", "output y"}
    assert "float64" in errs[0].message


@pytest.mark.parametrize(
    "values,severity,text",
    [([1.0, 2.0], INFO, "exactly representable"), ([0.1], WARNING, "rounding"), ([1e300], ERROR, "beyond float32")],
)
def test_float64_initializers(craft, values, severity, text):
    h, T = craft.helper, craft.T
    weight = h.make_tensor("w", T.DOUBLE, [len(values)], values)
    model = craft.model(
        [h.make_node("Cast", ["w"], ["wf"], to=T.FLOAT, name="cast_w"), h.make_node("Add", ["x", "wf"], ["y"], name="add")],
        [craft.value("x", T.FLOAT, [len(values)])], [craft.value("y", T.FLOAT, [len(values)])], initializers=[weight],
    )
    report = check_graph(model)
    found = [f for f in report.findings if f.subject == "initializer w"]
    assert len(found) == 1 and found[0].severity == severity and text in found[0].message


def test_string_tensors_fail(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("Identity", ["s"], ["t"], name="ident")],
        [craft.value("s", T.STRING, [2])], [craft.value("t", T.STRING, [2])],
    )
    assert {f.subject for f in _errors(check_graph(model), "dtype")} >= {"input s", "output t"}


def test_cast_to_double_is_a_warning(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("Cast", ["x"], ["d"], to=T.DOUBLE, name="up"), h.make_node("Cast", ["d"], ["y"], to=T.FLOAT, name="down")],
        [craft.value("x", T.FLOAT, [3])], [craft.value("y", T.FLOAT, [3])],
    )
    report = check_graph(model)
    assert report.ok
    assert [f.subject for f in _only(report, WARNING)] == ["up (Cast)"]


@pytest.mark.parametrize("dims,text", [([1, "batch", 4], "'batch'"), ([1, None, 4], "unnamed dynamic")])
def test_undeclared_dynamic_axis(craft, dims, text):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("Relu", ["x"], ["y"], name="relu")],
        [craft.value("x", T.FLOAT, dims)], [craft.value("y", T.FLOAT, dims)],
    )
    (err,) = _errors(check_graph(model, declared_axes=SEQ))
    assert err.check == "dynamic-axis" and text in err.message and "sequence" in err.message


def test_declared_axis_mismatch_with_manifest(craft):
    entry = {
        "inputs": [{"name": "x", "shape": [1, "sequence", 8], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [1, "sequence", 4], "dtype": "float16"}],
    }
    report = check_graph(craft.relu(), declared_axes=SEQ, manifest_entry=entry)
    subjects = {(f.check, f.subject) for f in _errors(report)}
    assert subjects == {("manifest", "input x"), ("manifest", "output y")}


@pytest.mark.parametrize(
    "opset,target,severity",
    [(25, "10.15", ERROR), (8, "10.0", ERROR), (21, "10.0", WARNING), (21, "10.15", None), (17, "10.0", None)],
)
def test_opset_range(craft, opset, target, severity):
    report = check_graph(craft.relu(opset=opset), declared_axes=SEQ, trt_version=target)
    found = [f.severity for f in report.findings if f.check == "opset"]
    assert found == ([] if severity is None else [severity])


def test_operator_newer_than_the_target(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("STFT", ["x", "step"], ["y"], name="stft")],
        [craft.value("x", T.FLOAT, [1, 64, 1]), craft.value("step", T.INT64, [])],
        [craft.value("y", T.FLOAT, [1, None, None, 2])],
    )
    msgs = [f.message for f in _errors(check_graph(model, trt_version="10.4"), "operator")]
    assert any("from TensorRT 10.5 on" in m for m in msgs)
    assert any("frame_step (step) is not an initializer" in m for m in msgs)


def _topk(craft, k_from_input=False, k=3, sorted_=1):
    h, T = craft.helper, craft.T
    inputs = [craft.value("scores", T.FLOAT, [1, 16])]
    nodes, inits = [], []
    if k_from_input:
        inputs.append(craft.value("k", T.INT64, [1]))
    else:
        inits.append(h.make_tensor("k", T.INT64, [1], [k]))
    nodes.append(h.make_node("TopK", ["scores", "k"], ["values", "indices"], name="topk", sorted=sorted_))
    return craft.model(nodes, inputs, [craft.value("indices", T.INT64, [1, None])], initializers=inits)


def test_topk_with_constant_k_passes(craft):
    assert check_graph(_topk(craft)).ok


def test_topk_with_runtime_k_fails(craft):
    errs = _errors(check_graph(_topk(craft, k_from_input=True)), "operator")
    assert len(errs) == 1 and "topk" in errs[0].subject and "computed at run time" in errs[0].message


@pytest.mark.parametrize("kwargs,text", [(dict(k=4000), "3840"), (dict(sorted_=0), "sorted=0")])
def test_topk_restrictions(craft, kwargs, text):
    errs = _errors(check_graph(_topk(craft, **kwargs)), "operator")
    assert errs and text in errs[0].message


def test_topk_k_through_constant_arithmetic_is_constant(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [
            h.make_node("Constant", [], ["k0"], value=h.make_tensor("v", T.INT64, [1], [2]), name="c"),
            h.make_node("Add", ["k0", "k0"], ["k"], name="add"),
            h.make_node("TopK", ["scores", "k"], ["values", "indices"], name="topk"),
        ],
        [craft.value("scores", T.FLOAT, [1, 16])], [craft.value("indices", T.INT64, [1, 4])],
    )
    assert check_graph(model).ok


def test_cumsum_axis_must_be_constant(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("CumSum", ["x", "axis"], ["y"], name="cumsum")],
        [craft.value("x", T.INT64, [1, 8]), craft.value("axis", T.INT64, [])], [craft.value("y", T.INT64, [1, 8])],
    )
    errs = _errors(check_graph(model), "operator")
    assert len(errs) == 1 and "build-time constant" in errs[0].message  # INT64 data itself is fine (addendum)


def test_layernorm_extra_outputs_fail(craft):
    h, T = craft.helper, craft.T
    scale = h.make_tensor("scale", T.FLOAT, [4], [1.0] * 4)
    model = craft.model(
        [h.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"], name="ln")],
        [craft.value("x", T.FLOAT, [2, 4])], [craft.value("y", T.FLOAT, [2, 4]), craft.value("mean", T.FLOAT, [2, 1])],
        initializers=[scale],
    )
    errs = _errors(check_graph(model), "operator")
    assert len(errs) == 1 and "mean" in errs[0].message


def test_types_outside_the_table_are_warnings(craft):
    h, T = craft.helper, craft.T
    model = craft.model(
        [h.make_node("Sin", ["x"], ["y"], name="sin")],
        [craft.value("x", T.INT64, [3])], [craft.value("y", T.INT64, [3])],
    )
    report = check_graph(model)
    assert report.ok and [f.subject for f in _only(report, WARNING)] == ["sin (Sin)"]


def _external_model(craft, tmp_path, location, length=None, write=64):
    h, T = craft.helper, craft.T
    w = h.make_tensor("w", T.FLOAT, [16], np.zeros(16, np.float32).tobytes(), raw=True)
    w.ClearField("raw_data")
    w.data_location = T.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(64 if length is None else length))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    if write:
        (tmp_path / "w.bin").write_bytes(b"\0" * write)
    return craft.model(
        [h.make_node("Add", ["x", "w"], ["y"], name="add")],
        [craft.value("x", T.FLOAT, [16])], [craft.value("y", T.FLOAT, [16])], initializers=[w],
    )


@pytest.mark.parametrize(
    "location,length,write,text",
    [
        ("w.bin", None, 64, None),
        ("w.bin", None, 0, "cannot be opened"),
        ("w.bin", None, 32, "truncated"),
        ("w.bin", 60, 64, "needs 64"),
        ("../w.bin", None, 64, "inside the ONNX file's folder"),
    ],
)
def test_external_data(craft, tmp_path, location, length, write, text):
    report = check_graph(_external_model(craft, tmp_path, location, length, write), folder=tmp_path)
    errs = _errors(report, "external-data")
    if text is None:
        assert report.ok and report.external == {"tensors": 1, "bytes": 64, "files": ["w.bin"]}
    else:
        assert errs and text in errs[0].message, report.findings
