"""Importance is informative (not uniform) and every cost term can change the ranking."""

import pytest
import torch

import topv
from topv.pruning.config import TopVConfig
from topv.pruning.cost import centre_cost, feature_cost, spatial_cost
from topv.pruning.importance import importance_from_cost, importance_logits, off_diagonal_logsumexp

VARIANTS = ["balanced_retention", "retention", "semi_relaxed", "balanced", "unbalanced"]


def _random_tokens(n, d, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=g) * scale
    t = torch.randn(n, d, generator=g)
    return s, t


@pytest.mark.parametrize("variant", VARIANTS)
def test_scores_sum_to_one_and_are_not_uniform(variant):
    s, t = _random_tokens(144, 32, 0)
    scores = topv.token_importance(s, t, (12, 12), TopVConfig(importance=variant))
    assert scores.shape == (144,) and scores.dtype == torch.float32
    assert torch.isclose(scores.sum(), torch.tensor(1.0), atol=1e-5)
    # Uniform would be 1/144 everywhere; require a relative spread of at least 1%.
    assert (scores.std() / scores.mean()).item() > 0.01
    assert scores.argmax() != scores.argmin()


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_equals_unbatched(variant):
    cfg = TopVConfig(importance=variant)
    s = torch.randn(3, 36, 16)
    t = torch.randn(3, 36, 16)
    batched = topv.token_importance(s, t, (6, 6), cfg)
    for i in range(3):
        torch.testing.assert_close(batched[i], topv.token_importance(s[i], t[i], (6, 6), cfg), rtol=1e-5, atol=1e-7)


def test_half_precision_inputs_are_solved_in_float32():
    s, t = _random_tokens(64, 16, 1)
    cfg = TopVConfig()
    full = topv.token_importance(s, t, (8, 8), cfg)
    half = topv.token_importance(s.half(), t.half(), (8, 8), cfg)
    assert half.dtype == torch.float32
    # Only the fp16 rounding of the inputs differs (relative 5e-4 per element).
    torch.testing.assert_close(half, full, rtol=2e-2, atol=1e-4)


def _ranking(scores):
    return torch.sort(scores, descending=True, stable=True).indices


def test_feature_term_changes_the_ranking():
    # Identical grids; one source token is far from every target in feature space.
    n, d = 25, 8
    t = torch.zeros(n, d)
    s = torch.zeros(n, d)
    s[7] = 10.0
    base = TopVConfig(alpha=1.0, beta=1.0, gamma=0.5)
    with_f = topv.token_importance(s, t, (5, 5), base)
    without_f = topv.token_importance(s, t, (5, 5), base.replace(alpha=0.0))
    assert not torch.equal(_ranking(with_f), _ranking(without_f))
    rank = {name: _ranking(scores).tolist().index(7) for name, scores in (("with", with_f), ("without", without_f))}
    assert rank["with"] > rank["without"]  # the outlier source ranks lower once features count


def test_spatial_term_changes_the_ranking():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(36, 8, generator=g)
    t = torch.randn(36, 8, generator=g)
    base = TopVConfig(alpha=1.0, beta=1.0, gamma=0.0)
    with_s = topv.token_importance(s, t, (6, 6), base)
    without_s = topv.token_importance(s, t, (6, 6), base.replace(beta=0.0))
    assert not torch.equal(_ranking(with_s), _ranking(without_s))


@pytest.mark.parametrize("variant", ["balanced_retention", "semi_relaxed", "unbalanced", "retention"])
def test_centre_term_changes_the_ranking(variant):
    g = torch.Generator().manual_seed(3)
    s = torch.randn(49, 8, generator=g)
    t = torch.randn(49, 8, generator=g)
    base = TopVConfig(alpha=1.0, beta=0.0, gamma=1.0, importance=variant)
    with_e = topv.token_importance(s, t, (7, 7), base)
    without_e = topv.token_importance(s, t, (7, 7), base.replace(gamma=0.0))
    assert not torch.equal(_ranking(with_e), _ranking(without_e))
    centre = 24
    assert with_e[centre] / without_e[centre] > with_e[0] / without_e[0]  # central tokens gain mass


def test_balanced_plan_ignores_a_source_only_term_at_convergence():
    # The trap the spec warns about: a balanced plan's source scaling absorbs an additive source-only
    # cost, so at convergence gamma cannot matter (and the row sums are uniform). In POT's order the
    # term only acts through the first target half-step, and fades as iterations grow.
    g = torch.Generator().manual_seed(4)
    cost = torch.rand(49, 49, generator=g, dtype=torch.float64)
    centre = centre_cost((7, 7)).double().unsqueeze(-1)
    converged = topv.sinkhorn(cost, None, None, 0.1, 500)
    torch.testing.assert_close(converged, topv.sinkhorn(cost + centre, None, None, 0.1, 500), rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(converged.sum(-1), torch.full((49,), 1 / 49, dtype=torch.float64))
    three = topv.sinkhorn(cost, None, None, 0.1, 3)
    assert not torch.allclose(three, topv.sinkhorn(cost + centre, None, None, 0.1, 3), rtol=1e-3)


def test_semi_relaxed_is_the_first_target_half_step():
    cost = torch.rand(2, 30, 30)
    cfg = TopVConfig(importance="semi_relaxed", epsilon=0.2)
    # From zero potentials, the first (target) half-step gives P = b_j softmax_i(-C/eps) (b_j = 1/30).
    from topv.pruning.sinkhorn import sinkhorn_potentials

    log_k, _, g = sinkhorn_potentials(cost, None, None, 0.2, 1)
    first_half = torch.exp(log_k + (-torch.logsumexp(log_k, dim=-2) - torch.log(torch.tensor(30.0))).unsqueeze(-2))
    torch.testing.assert_close(first_half, torch.softmax(-cost / 0.2, dim=-2) / 30)
    torch.testing.assert_close(importance_from_cost(cost, cfg), first_half.sum(-1))
    assert g.shape == (2, 30)


def test_cost_terms_are_normalized():
    s, t = _random_tokens(16, 8, 5, scale=30.0)
    for term in (feature_cost(s, t, "l2"), feature_cost(s, t, "l2_rms"), feature_cost(s, t, "cosine"),
                 spatial_cost((4, 4), 0.4), centre_cost((4, 4))):
        assert term.min().item() == pytest.approx(0.0, abs=1e-6)
        assert term.max().item() == pytest.approx(1.0, abs=1e-6)


def test_grid_must_match_token_count():
    s, t = _random_tokens(10, 4, 0)
    with pytest.raises(ValueError, match="grid 3x3 has 9 patches"):
        topv.token_importance(s, t, (3, 3))


def test_retention_is_the_diagonal_of_the_semi_relaxed_plan():
    cost = torch.rand(2, 30, 30, dtype=torch.float64)
    cfg = TopVConfig(importance="retention", epsilon=0.2)
    plan = torch.softmax(-cost / 0.2, dim=-2) / 30  # P = b_j softmax_i(-C / eps)
    own = torch.diagonal(plan, dim1=-2, dim2=-1) * 30  # P[i, i] / b_i
    key = importance_logits(cost, cfg)
    torch.testing.assert_close(key, torch.log(own) - torch.log1p(-own), rtol=1e-10, atol=1e-12)  # log-odds of P_ii / b_i
    assert torch.equal(_ranking(key), _ranking(own))
    torch.testing.assert_close(importance_from_cost(cost, cfg), torch.softmax(key, dim=-1))


def test_retention_ranks_a_distinct_token_above_its_duplicated_neighbours():
    """A flat background (20 identical tokens) and one distinct token: the row sums of the semi-relaxed
    plan barely tell them apart (a duplicate gets back from its duplicates what it loses to them), the
    diagonal does (a duplicate keeps 1/20 of its own mass, the distinct token nearly all of it)."""
    g = torch.Generator().manual_seed(5)
    background = torch.randn(1, 16, generator=g)
    s = background.repeat(25, 1)
    s[12] = torch.randn(16, generator=g) * 3  # the distinct token
    s[:4] = torch.randn(4, 16, generator=g) * 3  # a few other distinct tokens, so the costs are not all tied
    t = s.clone()
    base = TopVConfig(beta=0.0, gamma=0.0, epsilon=0.05)
    retention = topv.token_importance(s, t, (5, 5), base.replace(importance="retention"))
    rowsum = topv.token_importance(s, t, (5, 5), base.replace(importance="semi_relaxed"))
    duplicates = [i for i in range(4, 25) if i != 12]
    assert retention[12] > 10 * retention[duplicates].max()
    assert rowsum[12] < 2 * rowsum[duplicates].median()


@pytest.mark.parametrize("variant", ["balanced_retention", "balanced", "unbalanced"])
def test_iterations_change_the_scores_of_solved_variants(variant):
    s, t = _random_tokens(64, 16, 5)
    scores = [topv.token_importance(s, t, (8, 8), TopVConfig(importance=variant, iterations=n)) for n in (1, 3)]
    assert (scores[0] - scores[1]).abs().max().item() > 1e-4


def test_balanced_retention_is_the_diagonal_of_pots_plan():
    ot = pytest.importorskip("ot")
    import numpy as np

    from topv.pruning.cost import transport_cost

    s, t = _random_tokens(36, 8, 7)
    cfg = TopVConfig(importance="balanced_retention", iterations=3)
    cost = transport_cost(s.double(), t.double(), (6, 6), cfg).double()
    plan = ot.bregman.sinkhorn_log(np.full(36, 1 / 36), np.full(36, 1 / 36), cost.numpy(), cfg.epsilon, numItermax=3, stopThr=0)
    retained = np.diag(plan) * 36  # P_ii / a_i
    key = importance_logits(cost, cfg).numpy()
    # The key is the log-odds of P_ii / a_i (POT's rows sum to a_i after its last update) ...
    np.testing.assert_allclose(key, np.log(retained) - np.log1p(-retained), rtol=1e-9)
    # ... so it ranks exactly as the diagonal does, and the scores are its softmax.
    assert np.array_equal(np.argsort(-key, kind="stable"), np.argsort(-retained, kind="stable"))
    np.testing.assert_allclose(importance_from_cost(cost, cfg).numpy(), np.exp(key) / np.exp(key).sum(), rtol=1e-9)


def _saturated_problem(seed=0, n=16, d=32):
    """Tokens far apart in feature space: each keeps all but ~e-20 of its mass on its own target (the case that
    random-weight models give), so P_ii / a_i rounds to 1 in float32."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=g) * 10
    t = s + 0.05 * torch.randn(n, d, generator=g)
    return s, t


def test_the_ranking_key_keeps_its_range_where_the_diagonal_saturates():
    from topv.pruning.cost import transport_cost
    from topv.pruning.sinkhorn import sinkhorn_potentials

    s, t = _saturated_problem()
    cfg = TopVConfig(beta=0.2)
    cost = transport_cost(s, t, (4, 4), cfg)  # float32, as in the exported graph
    log_k, f, g = sinkhorn_potentials(cost, None, None, cfg.epsilon, cfg.iterations)
    diagonal32 = torch.exp(torch.diagonal(log_k, dim1=-2, dim2=-1) + f + g) * 16
    key64 = importance_logits(cost.double(), cfg)  # the same problem solved in float64
    # The old quantity: float32 rounds most of it to 1 and cannot tell the tokens apart.
    assert torch.unique(diagonal32).numel() <= 16 // 2
    assert not torch.equal(_ranking(diagonal32), _ranking(key64))
    key32 = importance_logits(cost, cfg)
    assert key32.dtype == torch.float32
    assert float(key64.max() - key64.min()) > 1.0
    assert torch.equal(_ranking(key32), _ranking(key64))  # the float32 order is the exact order
    torch.testing.assert_close(key32.double(), key64, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(topv.token_importance(s, t, (4, 4), cfg, log=True), key32)


@pytest.mark.parametrize("dim", [-1, -2])
def test_off_diagonal_logsumexp_leaves_out_the_diagonal(dim):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 7, 7, generator=g, dtype=torch.float64) * 30
    x = x + torch.eye(7, dtype=torch.float64) * 500  # a dominant diagonal cannot leak into the result
    got = off_diagonal_logsumexp(x, dim)
    eye = torch.eye(7, dtype=torch.bool)
    want = torch.logsumexp(x.masked_fill(eye, float("-inf")), dim=dim)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_single_token_has_a_finite_key():
    key = importance_logits(torch.zeros(1, 1), TopVConfig())
    assert key.shape == (1,) and torch.isfinite(key).all()


def test_the_default_runs_the_sinkhorn_iterations():
    s, t = _random_tokens(64, 16, 6)
    one = topv.token_importance(s, t, (8, 8), TopVConfig(iterations=1))
    three = topv.token_importance(s, t, (8, 8), TopVConfig(iterations=3))
    assert (one - three).abs().max().item() > 1e-4
