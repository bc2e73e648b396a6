"""Every importance variant exports to plain ONNX ops and ONNX Runtime reproduces PyTorch's scores."""

import numpy as np
import pytest
import torch

from topv.export.onnx_io import export_module
from topv.pruning.config import IMPORTANCE_VARIANTS, TopVConfig
from topv.pruning.importance import token_importance

ort = pytest.importorskip("onnxruntime")


class _Importance(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, source, target):
        return token_importance(source, target, (6, 6), self.config)


@pytest.mark.parametrize("variant", IMPORTANCE_VARIANTS)
def test_importance_variant_exports_and_matches_torch(variant, tmp_path):
    config = TopVConfig(importance=variant, gamma=1.0)
    g = torch.Generator().manual_seed(7)
    source, target = torch.randn(1, 36, 16, generator=g), torch.randn(1, 36, 16, generator=g)
    path = tmp_path / f"{variant}.onnx"
    export_module(_Importance(config), (source, target), path, ["source", "target"], ["scores"], None, opset=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"source": source.numpy(), "target": target.numpy()})
    expected = token_importance(source, target, (6, 6), config).numpy()
    # float32 end to end (GEMM, exp/log-sum-exp); different summation orders differ by a few ulp, and
    # scores of order 1/36 then agree to ~1e-6 relative.
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert (np.argsort(-got[0], kind="stable")[:12] == np.argsort(-expected[0], kind="stable")[:12]).all()


def _ops(path):
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("iterations", [1, 3, 5])
def test_the_default_graph_holds_the_unrolled_iterations(iterations, tmp_path):
    """Each Sinkhorn iteration is two log-sum-exp half-steps (ReduceMax, Exp, ReduceSum, Log), unrolled in the graph;
    no ReduceLogSumExp (mistranslated by OpenVINO 2026.4's ONNX frontend)."""
    g = torch.Generator().manual_seed(3)
    source, target = torch.randn(1, 36, 16, generator=g), torch.randn(1, 36, 16, generator=g)
    path = tmp_path / "default.onnx"
    export_module(_Importance(TopVConfig(iterations=iterations)), (source, target), path, ["source", "target"], ["scores"], None,
                  opset=17)
    ops = _ops(path)
    assert "ReduceLogSumExp" not in ops
    assert ops.count("Log") == 2 * iterations  # one per half-step; the cost, diagonal and softmax add none
    assert ops.count("ReduceMax") >= 2 * iterations
