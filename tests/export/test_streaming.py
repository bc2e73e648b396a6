"""Streaming export (``topv.export.stream``): the graphs equal an ordinary ``torch.onnx.export`` with weights, each
weight is stored once, folded constants still arrive, and validation never holds the PyTorch model and ONNX Runtime's
weights at once. Peak memory itself is a benchmark (``benchmarks/export_memory.py``), not a test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from topv.export.exporter import ExportOptions, _load, _plan, _run_chain, export_model
from topv.export.stream import ALIGN, WEIGHTS_FILE, WeightWriter, export_graph
from topv.testing.qwen import SHAPES as QWEN_SHAPES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ordinary_export(graph, args, path: Path) -> onnx.ModelProto:
    """What the export did before streaming: the TorchScript exporter with the weights (constant folding on)."""
    torch.onnx.export(graph.module, args, str(path), input_names=graph.input_names, output_names=graph.output_names,
                      dynamic_axes=graph.dynamic_axes or None, opset_version=17, do_constant_folding=True, dynamo=False)
    return onnx.load(str(path), load_external_data=True)


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["llava", "qwen2.5-vl"])
def test_streamed_graphs_are_the_ordinary_export(exports, tmp_path, name):
    """Same operators in the same order, and the same outputs on the recorded feeds, bit for bit."""
    from topv.graphs.build import build_graph_modules
    from topv.runtime.backends.torch.backend import TorchBackend
    from topv.runtime.chain import Recorder

    shape = "tiny" if name == "llava" else QWEN_SHAPES["tiny-qwen2.5-vl"]
    model_dir = exports.model_dir(f"stream-{name}", shape)
    job = _plan(model_dir, tmp_path / "unused", ExportOptions(keep=4))
    _load(job)
    modules = build_graph_modules(job.model, job.family, job.spec, layer=job.layer, keep=job.keep, config=job.options.config)
    recorder = Recorder(TorchBackend(job.kv, modules, "cpu"))
    _run_chain(recorder, job, job.samples[0])
    writer = WeightWriter(tmp_path)
    for graph_name, graph in modules.items():
        call = recorder.first(graph_name)
        args = tuple(torch.from_numpy(call.feeds[i]) for i in graph.input_names)
        streamed = export_graph(graph, args, writer, 17)
        ordinary = _ordinary_export(graph, args, tmp_path / f"ordinary-{graph.file}")
        assert [n.op_type for n in streamed.graph.node] == [n.op_type for n in ordinary.graph.node], graph_name
        assert [i.name for i in streamed.graph.input] == [i.name for i in ordinary.graph.input]
        onnx.save(streamed, str(tmp_path / graph.file))
    writer.close()
    for graph_name, graph in modules.items():
        call = recorder.first(graph_name)
        feeds = {k: v for k, v in call.feeds.items() if k in graph.input_names}
        got = _session(tmp_path / graph.file).run(None, feeds)
        want = _session(tmp_path / f"ordinary-{graph.file}").run(None, feeds)
        for g, w, out in zip(got, want, graph.output_names):
            np.testing.assert_array_equal(g, w, err_msg=f"{graph_name}/{out}")


def test_each_weight_is_stored_once(tmp_path):
    base = torch.arange(4096, dtype=torch.float32).reshape(64, 64)
    writer = WeightWriter(tmp_path)
    first = writer.initializer("a", base)
    again = writer.initializer("b", base)  # the same tensor in another graph
    equal = writer.initializer("c", base.clone())  # another tensor with the same bytes
    view = writer.initializer("d", base.t())  # a transposed view: other bytes
    small = writer.initializer("e", torch.ones(8))
    writer.close()
    where = {p.name: {e.key: e.value for e in p.external_data} for p in (first, again, equal, view)}
    assert where["a"]["offset"] == where["b"]["offset"] == where["c"]["offset"] != where["d"]["offset"]
    assert all(int(w["offset"]) % ALIGN == 0 for w in where.values())
    assert writer.stats() == {"initializer_bytes": 4 * base.numel() * 4, "stored_bytes": 2 * base.numel() * 4}
    assert small.data_location == onnx.TensorProto.DEFAULT and len(small.external_data) == 0
    data = np.memmap(tmp_path / WEIGHTS_FILE, dtype=np.float32, mode="r")
    offset = int(where["d"]["offset"]) // 4
    np.testing.assert_array_equal(data[offset:offset + base.numel()].reshape(64, 64), base.t().numpy())


def test_a_freed_tensor_address_is_never_taken_for_the_same_weight(tmp_path):
    """Temporaries (folded constants, copies from a GPU) die between calls; the allocator would hand their address
    to the next tensor of the same shape, whose bytes differ."""
    writer = WeightWriter(tmp_path)
    offsets = []
    for i in range(8):  # 256 KiB each: an address glibc reuses at once (it did, before the writer held them)
        t = torch.full((256, 256), float(i))
        offsets.append(next(e.value for e in writer.initializer(f"t{i}", t).external_data if e.key == "offset"))
        del t
    writer.close()
    assert len(set(offsets)) == 8


def test_the_exporter_lets_go_of_a_traced_graphs_weights(tmp_path):
    """The TorchScript exporter keeps the last graph's weights alive after it returns; export_graph clears that, so
    a model dropped after its export frees its memory. The case measured: Qwen2.5-VL-7B's float16 embedding table
    (152064 x 3584, 1.0 GiB), whose memory stayed allocated; RSS is read from /proc."""
    from topv.graphs.build import GraphModule
    from topv.memory import host_rss, trim_host_memory

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Embedding.from_pretrained(torch.ones(152064, 3584, dtype=torch.float16))

        def forward(self, ids):
            return self.table(ids) * 2.0

    module = Embed().eval().requires_grad_(False)
    graph = GraphModule("embed", module, ["ids"], ["y"], {})
    writer = WeightWriter(tmp_path)
    export_graph(graph, (torch.randint(0, 1000, (1, 285)),), writer, 17)
    writer.close()
    before = host_rss()
    del module, graph
    trim_host_memory()
    assert before - host_rss() > 2**30 * 0.8


class _Folded(nn.Module):
    """A constant the exporter folds from a weight (``2 * w``): not a parameter of the module."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(32, 48), requires_grad=False)
        self.proj = nn.Linear(48, 16)

    def forward(self, x):
        return self.proj(torch.matmul(x, self.w * 2.0))


@pytest.mark.parametrize("capture", [True, False], ids=["exporter-table", "ordinary-export-fallback"])
def test_constants_folded_from_weights_still_arrive(tmp_path, monkeypatch, capture):
    import contextlib

    import topv.export.stream as stream
    from topv.graphs.build import GraphModule

    if not capture:  # a torch without the pass the table is taken from
        monkeypatch.setattr(stream, "_captured_params", lambda into: contextlib.nullcontext())
    torch.manual_seed(0)
    graph = GraphModule("folded", _Folded().eval(), ["x"], ["y"], {})
    x = torch.randn(1, 5, 32)
    writer = WeightWriter(tmp_path)
    model = export_graph(graph, (x,), writer, 17)
    writer.close()
    onnx.save(model, str(tmp_path / "folded.onnx"))
    (got,) = _session(tmp_path / "folded.onnx").run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, graph.module(x).detach().numpy(), rtol=1e-5, atol=1e-6)  # float32 rounding


def test_validation_releases_the_model_before_onnx_runtime(exports, tmp_path, monkeypatch):
    import topv.export.checks as checks

    opened = []
    original = checks.open_exported

    def spy(folder, job, **kwargs):
        opened.append(job.model is None)
        return original(folder, job, **kwargs)

    monkeypatch.setattr(checks, "open_exported", spy)
    export_model(exports.model_dir("stream-llava", "tiny"), tmp_path / "out", ExportOptions(keep=4, validate_tokens=3))
    assert opened == [True]


@pytest.mark.parametrize("mode", ["graphs", "none"])
def test_validate_modes_say_what_was_checked(exports, tmp_path, mode):
    out = export_model(exports.model_dir("stream-llava", "tiny"), tmp_path / "out", ExportOptions(keep=4, validate=mode))
    report = json.loads((out / "validation.json").read_text())
    assert report["ok"] and report["mode"] == mode
    if mode == "graphs":
        assert report["generation"]["skipped"] and {c["graph"] for c in report["graphs"]["checks"]} == {
            "vision", "prefill_head", "prune", "prefill_tail", "decode_step"}
        assert report["reference"]["ok"] and report["reference"]["checks"]
    else:
        assert "graphs" not in report and "numeric validation skipped" in report["lines"][0]


def test_too_little_memory_or_disk_is_refused_before_loading(exports, tmp_path, monkeypatch):
    import topv.export.resources as resources
    from topv.errors import ResourceError

    model_dir = exports.model_dir("stream-llava", "tiny")
    weights = resources.checkpoint_bytes(model_dir, 4)
    assert weights and weights > 0
    monkeypatch.setattr(resources, "available_memory", lambda: weights // 2)
    with pytest.raises(ResourceError, match=r"GiB of weights in memory, but only .* GiB is available"):
        export_model(model_dir, tmp_path / "out", ExportOptions(keep=4))
    monkeypatch.setattr(resources, "available_memory", lambda: None)

    class Usage:
        free = weights // 3

    monkeypatch.setattr(resources.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(ResourceError, match="writes about .* GiB free"):
        export_model(model_dir, tmp_path / "out", ExportOptions(keep=4))
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_with_exit_code_2_and_no_traceback(exports, tmp_path, monkeypatch, capsys):
    import topv.export.resources as resources
    from topv.export.cli import main

    monkeypatch.setattr(resources, "available_memory", lambda: 1024)
    assert main([str(exports.model_dir("stream-llava", "tiny")), str(tmp_path / "out"), "--keep", "4", "-q"]) == 2
    err = capsys.readouterr().err
    assert "is available here" in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_checkpoint_bytes_follow_the_export_dtype(exports):
    from safetensors import safe_open

    from topv.export.resources import checkpoint_bytes

    model_dir = exports.model_dir("stream-llava", "tiny")
    count = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            count += sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel")
                         else int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    assert checkpoint_bytes(model_dir, 4) == 4 * count and checkpoint_bytes(model_dir, 2) == 2 * count


def test_long_passes_report_progress_per_layer(exports, tmp_path, monkeypatch, caplog):
    import logging

    import topv.export.exporter as exporter

    monkeypatch.setattr(exporter._LayerProgress.__init__, "__defaults__", (0.0,))  # a line at every layer
    with caplog.at_level(logging.INFO, logger="topv.export"):
        export_model(exports.model_dir("stream-llava", "tiny"), tmp_path / "out", ExportOptions(keep=4, validate="none"))
    lines = [r.getMessage() for r in caplog.records]
    layers = 4  # the tiny shape's decoder
    assert sum("recording the chain on prompt 1/2: decoder layer" in line for line in lines) >= layers
    assert any(f"tracing decode_step.onnx: decoder layer {layers}/{layers}" in line for line in lines)
    assert all("peak" in line for line in lines if "decoder layer" in line or " written in " in line)
