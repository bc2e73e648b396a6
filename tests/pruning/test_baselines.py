import pytest
import torch

from topv.errors import KeepOutOfRangeError
from topv.pruning.baselines import random_selection, uniform_selection


def test_random_selection_is_seeded_sorted_unique():
    a = random_selection(144, 16, seed=3)
    assert torch.equal(a, random_selection(144, 16, seed=3))
    assert not torch.equal(a, random_selection(144, 16, seed=4))
    assert a.numel() == 16 and torch.all(a[1:] > a[:-1])


@pytest.mark.parametrize("grid", [(12, 12), (24, 24), (5, 7), (1, 9)])
@pytest.mark.parametrize("fraction", [1 / 9, 2 / 9, 1 / 3, 0.5, 1.0])
def test_uniform_selection_covers_the_grid(grid, fraction):
    h, w = grid
    n = h * w
    keep = max(1, round(n * fraction))
    kept = uniform_selection(grid, keep)
    assert kept.numel() == keep and torch.all(kept[1:] > kept[:-1]) and kept.max() < n
    if keep >= 4 and h >= 2 and w >= 2:
        rows, cols = kept // w, kept % w
        # Spread: the kept tokens reach both halves of the grid in each direction.
        assert rows.min() < h / 2 <= rows.max() and cols.min() < w / 2 <= cols.max()


def test_uniform_selection_on_12x12_at_16_is_a_4x4_lattice():
    kept = uniform_selection((12, 12), 16)
    rows, cols = (kept // 12).unique(), (kept % 12).unique()
    assert rows.tolist() == [1, 4, 7, 10] and cols.tolist() == [1, 4, 7, 10]


def test_out_of_range():
    with pytest.raises(KeepOutOfRangeError):
        uniform_selection((4, 4), 17)
    with pytest.raises(KeepOutOfRangeError):
        random_selection(16, 0)
