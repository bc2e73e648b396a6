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
    # One per half-step but the last (the key's log-odds cancel the last source potential, so the exporter drops
    # it) and one for the off-diagonal mass; the cost and softmax add none.
    assert ops.count("Log") == 2 * iterations
    assert ops.count("ReduceMax") >= 2 * iterations


def _constants(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    values = [numpy_helper.to_array(t) for t in model.graph.initializer]
    for node in model.graph.node:
        values += [numpy_helper.to_array(a.t) for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return [v for v in values if np.issubdtype(v.dtype, np.floating)]


class _Select(torch.nn.Module):
    def __init__(self, keep, config):
        super().__init__()
        self.keep, self.config = keep, config

    def forward(self, scores):
        from topv.pruning.selection import select_tokens

        return select_tokens(scores, self.keep, self.config)


def test_the_ranking_key_exports_with_finite_constants_and_keeps_the_order(tmp_path):
    """The masked diagonal is plain ops with no infinite (or fp16-overflowing) constant; ONNX Runtime's key
    ranks the tokens as PyTorch's, with gaps far above the difference between the two."""
    g = torch.Generator().manual_seed(11)
    source, target = torch.randn(1, 36, 16, generator=g) * 5, torch.randn(1, 36, 16, generator=g)
    path = tmp_path / "key.onnx"

    class _Key(_Importance):
        def forward(self, source, target):
            return token_importance(source, target, (6, 6), self.config, log=True)

    export_module(_Key(TopVConfig()), (source, target), path, ["source", "target"], ["key"], None, opset=17)
    assert all(np.isfinite(c).all() and np.abs(c).max(initial=0) < 65504 for c in _constants(path))
    assert {"Where", "ReduceMin"} <= set(_ops(path))
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"source": source.numpy(), "target": target.numpy()})
    want = token_importance(source, target, (6, 6), TopVConfig(), log=True).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    gaps = -np.diff(np.sort(want[0])[::-1])
    assert (np.argsort(-got[0], kind="stable") == np.argsort(-want[0], kind="stable")).all()
    assert gaps.min() > 100 * np.abs(got - want).max()


@pytest.mark.parametrize("keep,fraction", [(5, 0.0), (9, 0.25), (20, 0.5)])
def test_exported_selection_breaks_exact_ties_by_the_lower_index(keep, fraction, tmp_path):
    config = TopVConfig(recovery_fraction=fraction)
    g = torch.Generator().manual_seed(keep)
    scores = (torch.rand(1, 36, generator=g) * 3).floor()  # exact ties everywhere
    path = tmp_path / "select.onnx"
    export_module(_Select(keep, config), (scores,), path, ["scores"], ["kept"], None, opset=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed in range(5):
        scores = (torch.rand(1, 36, generator=torch.Generator().manual_seed(seed)) * 3).floor()
        (got,) = session.run(None, {"scores": scores.numpy()})
        order = sorted(range(36), key=lambda i: (-float(scores[0, i]), i))
        from topv.pruning.config import recovery_count

        top = set(order[:keep - recovery_count(keep, fraction, 36)])
        assert top <= set(got[0].tolist())
        assert got.tolist() == _Select(keep, config)(scores).tolist()
