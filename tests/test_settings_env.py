import pytest

from topv.config import env_flag, env_int
from topv.errors import ConfigError


def test_env_flag(monkeypatch):
    monkeypatch.delenv("TOPV_X", raising=False)
    assert env_flag("TOPV_X") is False and env_flag("TOPV_X", True) is True
    for raw, value in (("1", True), ("Yes", True), (" on ", True), ("0", False), ("false", False), ("", False)):
        monkeypatch.setenv("TOPV_X", raw)
        assert env_flag("TOPV_X") is value
    monkeypatch.setenv("TOPV_X", "maybe")
    with pytest.raises(ConfigError, match="TOPV_X='maybe' is not a boolean"):
        env_flag("TOPV_X")


def test_env_int(monkeypatch):
    monkeypatch.setenv("TOPV_N", "3")
    assert env_int("TOPV_N") == 3
    monkeypatch.setenv("TOPV_N", "zero")
    with pytest.raises(ConfigError, match="not an integer"):
        env_int("TOPV_N")
    monkeypatch.setenv("TOPV_N", "0")
    with pytest.raises(ConfigError, match=">= 1"):
        env_int("TOPV_N")
