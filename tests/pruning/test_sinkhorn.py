"""The solver equals POT's log-domain Sinkhorn for the same number of iterations."""

import numpy as np
import pytest
import torch

ot = pytest.importorskip("ot")

import topv


def _problem(n, m, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(n, m, generator=g, dtype=torch.float64)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
    return cost.to(dtype), (a / a.sum()).to(dtype), (b / b.sum()).to(dtype)


@pytest.mark.parametrize("iters", [1, 2, 3, 4, 7, 25])
@pytest.mark.parametrize("shape", [(9, 9), (16, 11), (40, 40)])
def test_float64_matches_pot(iters, shape):
    cost, a, b = _problem(*shape, seed=iters, dtype=torch.float64)
    for eps in (0.05, 0.1, 1.0):
        ours = topv.sinkhorn(cost, a, b, eps, iters)
        ref = ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), cost.numpy(), eps, numItermax=iters, stopThr=0, warn=False)
        np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)


def test_uniform_marginals_default_to_pot_defaults():
    cost, _, _ = _problem(12, 12, seed=0, dtype=torch.float64)
    ours = topv.sinkhorn(cost, None, None, 0.1, 3)
    ref = ot.bregman.sinkhorn_log([], [], cost.numpy(), 0.1, numItermax=3, stopThr=0, warn=False)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("iters", [1, 3, 10])
def test_float32_matches_pot_float64(iters):
    # float32 log-domain: each logsumexp has relative error ~1e-7 on arguments of size |C|/eps <= 1/0.1 = 10,
    # so potentials carry ~1e-6 absolute error and the plan (entries ~1/n^2) a relative error of ~1e-5;
    # 1e-4 relative leaves a 10x margin and still catches any wrong update order (~1e-3 at 3 iterations).
    cost, a, b = _problem(144, 144, seed=3, dtype=torch.float64)
    ref = ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), cost.numpy(), 0.1, numItermax=iters, stopThr=0, warn=False)
    ours = topv.sinkhorn(cost.float(), a.float(), b.float(), 0.1, iters).double().numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-12)


def test_batched_equals_per_problem():
    cost = torch.rand(3, 10, 8, dtype=torch.float64)
    batched = topv.sinkhorn(cost, None, None, 0.2, 3)
    for i in range(3):
        torch.testing.assert_close(batched[i], topv.sinkhorn(cost[i], None, None, 0.2, 3), rtol=0, atol=1e-15)


def test_plan_row_sums_equal_source_marginal_after_pot_order():
    # POT ends every iteration on the row update: this is why row sums alone are uninformative (spec A1).
    cost, a, b = _problem(20, 20, seed=5, dtype=torch.float64)
    plan = topv.sinkhorn(cost, a, b, 0.1, 3)
    torch.testing.assert_close(plan.sum(-1), a, rtol=0, atol=1e-14)


def test_numpy_inputs_give_numpy_results_equal_to_pot():
    rng = np.random.default_rng(0)
    cost = rng.random((8, 6))
    a = np.full(8, 1 / 8)
    b = rng.random(6)
    b /= b.sum()
    plan = topv.sinkhorn(cost, a, b, 0.1, 3)
    assert isinstance(plan, np.ndarray)
    np.testing.assert_allclose(plan, ot.bregman.sinkhorn_log(a, b, cost, 0.1, numItermax=3, stopThr=0, warn=False), atol=1e-12)
    np.testing.assert_allclose(topv.sinkhorn(cost, [], [], 0.1, 2),
                               ot.bregman.sinkhorn_log([], [], cost, 0.1, numItermax=2, stopThr=0, warn=False), atol=1e-12)
