"""Selection properties over many random shapes, recovery spread, determinism and ties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import topv
from topv.errors import KeepOutOfRangeError
from topv.pruning.config import TopVConfig, recovery_count
from topv.pruning.selection import evenly_spaced_positions


@st.composite
def problems(draw):
    n = draw(st.integers(1, 300))
    keep = draw(st.integers(1, n))
    batch = draw(st.integers(1, 3))
    fraction = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9]))
    seed = draw(st.integers(0, 2**31 - 1))
    ties = draw(st.booleans())
    return n, keep, batch, fraction, seed, ties


@settings(max_examples=200, deadline=None)
@given(problems())
def test_selection_properties(problem):
    n, keep, batch, fraction, seed, ties = problem
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(batch, n, generator=g)
    if ties:
        scores = (scores * 4).floor()  # many exact ties
    cfg = TopVConfig(recovery_fraction=fraction)
    kept = topv.select_tokens(scores, keep, cfg)
    assert kept.shape == (batch, keep) and kept.dtype == torch.int64
    assert torch.all(kept[:, 1:] > kept[:, :-1])  # sorted and unique
    assert kept.min() >= 0 and kept.max() < n
    assert torch.equal(kept, topv.select_tokens(scores.clone(), keep, cfg))  # deterministic

    recovered = recovery_count(keep, fraction, n)
    k_top = keep - recovered
    for row in range(batch):
        # The top-k part: the k_top best scores, ties broken by lower index (ONNX TopK's rule).
        order = sorted(range(n), key=lambda i: (-scores[row, i].item(), i))
        top = set(order[:k_top])
        chosen = set(kept[row].tolist())
        assert top <= chosen
        rec = sorted(chosen - top)
        assert len(rec) == recovered
        # Recovery spread: evenly spaced over the pruned tokens in raster order.
        pruned = sorted(set(range(n)) - top)
        ranks = [pruned.index(i) for i in rec]
        expected = evenly_spaced_positions(recovered, len(pruned)).tolist()
        assert ranks == expected
        if recovered > 1:
            gaps = [b - a for a, b in zip(ranks, ranks[1:])]
            spacing = len(pruned) / recovered
            assert all(spacing - 1 <= gap <= spacing + 1 for gap in gaps)


def test_keep_all_returns_every_index():
    scores = torch.rand(50)
    assert torch.equal(topv.select_tokens(scores, 50), torch.arange(50))


def test_unbatched_input_gives_unbatched_output():
    kept = topv.select_tokens(torch.rand(30), 10)
    assert kept.shape == (10,)


def test_larger_scores_are_kept_without_recovery():
    scores = torch.arange(20, dtype=torch.float32)
    kept = topv.select_tokens(scores, 5, TopVConfig(recovery_fraction=0.0))
    assert kept.tolist() == [15, 16, 17, 18, 19]


def test_recovery_takes_evenly_spaced_pruned_tokens():
    scores = torch.arange(20, dtype=torch.float32)  # top-k is the tail 16..19
    kept = topv.select_tokens(scores, 8, TopVConfig(recovery_fraction=0.5))
    # 4 by score (16..19) + 4 recovered from the 16 pruned tokens 0..15 at floor((i + 0.5) * 4).
    assert kept.tolist() == [2, 6, 10, 14, 16, 17, 18, 19]


@pytest.mark.parametrize("keep", [0, -1, 51, 2.5, True])
def test_keep_out_of_range_is_a_typed_error(keep):
    with pytest.raises(KeepOutOfRangeError, match="between 1 and the number of visual tokens \\(50\\)|integer"):
        topv.select_tokens(torch.rand(50), keep)


def _topk_higher_index_first(x, k, dim=-1, largest=True, sorted=True):
    """``torch.topk`` with the opposite tie order (the higher index first among equal values), standing in for a
    runtime whose ``TopK`` tie order differs from ONNX's (TensorRT documents none)."""
    assert dim == -1 and sorted
    n = x.shape[-1]
    flipped = torch.flip(x, dims=[-1])
    order = torch.sort(flipped, dim=-1, descending=largest, stable=True).indices[..., :k]
    indices = n - 1 - order
    return torch.return_types.topk((torch.gather(x, -1, indices), indices))


@settings(max_examples=100, deadline=None)
@given(problems())
def test_the_tie_rule_does_not_rest_on_topks_tie_order(problem):
    n, keep, batch, fraction, seed, _ = problem
    g = torch.Generator().manual_seed(seed)
    scores = (torch.rand(batch, n, generator=g) * 3).floor()  # exact ties everywhere
    cfg = TopVConfig(recovery_fraction=fraction)
    want = topv.select_tokens(scores, keep, cfg)
    original = torch.topk
    torch.topk = _topk_higher_index_first
    try:
        got = topv.select_tokens(scores, keep, cfg)
    finally:
        torch.topk = original
    assert torch.equal(got, want)


def test_the_stand_in_topk_really_reverses_ties():
    x = torch.tensor([[2.0, 5.0, 5.0, 1.0, 5.0]])
    assert _topk_higher_index_first(x, 2).indices.tolist() == [[4, 2]]
    assert _topk_higher_index_first(x, 2).values.tolist() == [[5.0, 5.0]]


def test_exact_ties_keep_the_lower_index():
    scores = torch.tensor([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.0])
    # Top 3: token 1 and 3 (score 3), then the first 2 of the three tokens at 2 (2, 4, 5): token 2.
    assert topv.select_tokens(scores, 3, TopVConfig(recovery_fraction=0.0)).tolist() == [1, 2, 3]
    assert topv.select_tokens(scores, 4, TopVConfig(recovery_fraction=0.0)).tolist() == [1, 2, 3, 4]


def test_scores_that_differ_are_never_reordered_by_position():
    # One float32 ulp apart at 1.0: the larger one wins whatever its position.
    below = float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))
    scores = torch.tensor([below, 1.0, below, below])
    assert topv.select_tokens(scores, 1, TopVConfig(recovery_fraction=0.0)).tolist() == [1]


def test_float64_scores_are_ranked_in_float64():
    # 1e-12 apart: equal in float32 (where the lower index would win), distinct in float64, where the larger wins.
    scores = torch.tensor([1.0, 1.0 + 1e-12, 1.0], dtype=torch.float64)
    assert scores.float().unique().numel() == 1
    assert topv.select_tokens(scores, 1, TopVConfig(recovery_fraction=0.0)).tolist() == [1]
    assert topv.select_tokens(scores.float(), 1, TopVConfig(recovery_fraction=0.0)).tolist() == [0]
