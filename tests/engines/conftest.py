"""Fixtures for the TensorRT path: tiny exports, a stand-in tensorrt module, crafted ONNX graphs."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from topv.testing.llava import LlavaShape

HERE = Path(__file__).resolve().parent
GQA = LlavaShape(num_kv_heads=2, initializer_range=0.2)  # 4x4 grid, 4 layers, grouped-query attention
FULL = LlavaShape(num_kv_heads=2, initializer_range=0.2, vision_feature_select_strategy="full")  # CLS kept
STANDIN_GPU = ("Standin GPU", "8.7")


def _standin_module():
    name = "topv_tests_fake_tensorrt"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "fake_tensorrt.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def standin_trt(monkeypatch):
    """``import tensorrt`` gives the stand-in; the GPU is a fixed fake one."""
    from topv.engines import device as devmod
    from topv.engines.engine_manifest import GpuInfo

    module = _standin_module()
    module.BUILDS.clear()
    module.FAIL_BUILD.clear()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(devmod, "detect_gpu", lambda index=0: GpuInfo(*STANDIN_GPU))
    return module


@pytest.fixture(scope="session")
def pruned_export(exports):
    return exports.export("engines-gqa", GQA, keep=6, layer=1, validate_tokens=2)


@pytest.fixture(scope="session")
def unpruned_export(exports):
    return exports.export("engines-gqa", GQA, keep=None, validate_tokens=2)


@pytest.fixture(scope="session")
def full_fp16_export(exports):
    return exports.export("engines-full", FULL, keep=5, layer=1, dtype="fp16", validate_tokens=2)


@pytest.fixture
def copy_export(tmp_path):
    """Copy an export folder into tmp_path (builds write into the folder; the session exports stay clean)."""

    def copy(src: Path, name: str = "out") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return copy


class Craft:
    """Small ONNX models built with onnx.helper, for the check's failure cases."""

    def __init__(self):
        import onnx
        from onnx import TensorProto, helper

        self.onnx, self.helper, self.T = onnx, helper, TensorProto

    def model(self, nodes, inputs, outputs, initializers=(), opset=17, ir_version=8, domains=()):
        h = self.helper
        graph = h.make_graph(nodes, "crafted", inputs, outputs, initializer=list(initializers))
        imports = [h.make_opsetid("", opset)] + [h.make_opsetid(d, 1) for d in domains]
        model = h.make_model(graph, opset_imports=imports)
        model.ir_version = ir_version
        return model

    def value(self, name, elem, shape):
        return self.helper.make_tensor_value_info(name, elem, shape)

    def relu(self, **kwargs):
        """x (1, 'sequence', 4) -> Relu -> y: a graph that passes."""
        T, h = self.T, self.helper
        return self.model(
            [h.make_node("Relu", ["x"], ["y"], name="relu")],
            [self.value("x", T.FLOAT, [1, "sequence", 4])],
            [self.value("y", T.FLOAT, [1, "sequence", 4])],
            **kwargs,
        )


@pytest.fixture(scope="session")
def craft():
    return Craft()
