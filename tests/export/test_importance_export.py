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
