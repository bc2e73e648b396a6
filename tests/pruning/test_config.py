import pytest

from topv.errors import ConfigError
from topv.pruning.config import TopVConfig, recovery_count


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("alpha", -1.0, "alpha must be a number >= 0"),
        ("epsilon", 0.0, "epsilon must be a number > 0"),
        ("sigma", -2.0, "sigma must be a number > 0"),
        ("iterations", 0, "iterations must be an integer >= 1"),
        ("iterations", 2.5, "iterations must be an integer >= 1"),
        ("importance", "rowsum", "importance must be one of balanced_retention, retention, semi_relaxed, balanced, unbalanced"),
        ("feature_distance", "l1", "feature_distance must be one of"),
        ("recovery_fraction", 1.0, "recovery_fraction must be in \\[0, 1\\)"),
    ],
)
def test_invalid_values_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TopVConfig(**{field: value})


def test_all_weights_zero_is_rejected():
    with pytest.raises(ConfigError, match="all 0"):
        TopVConfig(alpha=0, beta=0, gamma=0)


def test_round_trip_through_dict_and_unknown_fields():
    cfg = TopVConfig(gamma=0.3, importance="unbalanced")
    assert TopVConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="Unknown TopVConfig fields \\['lambda'\\]"):
        TopVConfig.from_dict({"lambda": 1})


def test_recovery_count():
    assert recovery_count(64, 0.25, 576) == 16
    assert recovery_count(1, 0.9, 576) == 0  # at least one token from the ranking
    assert recovery_count(576, 0.25, 576) == 0  # nothing pruned, nothing to recover
