import numpy as np
import pytest

from topv.errors import InputError
from topv.sampling import SamplingConfig, TokenSampler, stop_ids


def test_greedy_is_argmax_with_first_index_on_ties():
    s = TokenSampler(SamplingConfig())
    assert s(np.array([0.1, 3.0, 3.0, -1.0])) == 1


def test_top_p_keeps_the_smallest_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    s = TokenSampler(SamplingConfig(temperature=1.0, top_p=0.7, seed=0))
    draws = {s(logits) for _ in range(300)}
    assert draws == {0, 1}


def test_temperature_sharpens_and_seed_reproduces():
    logits = np.array([1.0, 0.5, 0.0])
    a = [TokenSampler(SamplingConfig(temperature=0.7, seed=3))(logits) for _ in range(5)]
    b = [TokenSampler(SamplingConfig(temperature=0.7, seed=3))(logits) for _ in range(5)]
    assert a == b
    cold = TokenSampler(SamplingConfig(temperature=0.05, seed=1))
    assert {cold(logits) for _ in range(50)} == {0}


@pytest.mark.parametrize("kwargs", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5)])
def test_invalid(kwargs):
    with pytest.raises(InputError):
        SamplingConfig(**kwargs)


def test_stop_ids():
    assert stop_ids(2) == {2}
    assert stop_ids([2, 7], [9]) == {2, 7, 9}
    assert stop_ids(None) == frozenset()
