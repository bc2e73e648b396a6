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
