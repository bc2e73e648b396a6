"""The encoded TensorRT 10.x operator table and its version helpers."""

import pytest

from topv.engines import trt_ops


def test_table_is_the_10_15_operators_md():
    assert trt_ops.SOURCE["file"] == "docs/operators.md"
    assert trt_ops.SOURCE["table_version"] == "10.15"
    assert len(trt_ops.OPERATORS) == 200
    assert sum(op.supported for op in trt_ops.OPERATORS.values()) == 158
    assert not trt_ops.OPERATORS["Unique"].supported
    assert not trt_ops.OPERATORS["NonMaxSuppression"].restrictions
    assert "3840" in trt_ops.OPERATORS["TopK"].restrictions
    assert "build-time constant" in trt_ops.OPERATORS["CumSum"].restrictions


def test_every_supported_row_lists_types_of_the_type_vocabulary():
    known = set(trt_ops.TRT_TYPE_NAMES.values())
    for name, op in trt_ops.OPERATORS.items():
        if op.supported:
            assert op.types, name
            assert set(op.types) <= known, (name, op.types)


@pytest.mark.parametrize("text,expected", [("10", (10, 0)), ("10.3", (10, 3)), ("10.3.0.26", (10, 3)), ("10.x", (10, 0)), ("v10.15", (10, 15))])
def test_parse_version(text, expected):
    assert trt_ops.parse_version(text) == expected


def test_parse_version_rejects_words():
    with pytest.raises(ValueError, match="not a TensorRT version"):
        trt_ops.parse_version("latest")


def test_opset_ranges_between_known_tables():
    assert trt_ops.opset_range((10, 0)) == (9, 20, 24)
    assert trt_ops.opset_range((10, 8)) == (9, 20, 24)  # 21..24 possible, not confirmed
    assert trt_ops.opset_range((10, 15)) == (9, 24, 24)
    assert trt_ops.opset_range((10, 30)) == (9, 24, 24)


def test_availability_by_release():
    ops = trt_ops.OPERATORS
    assert trt_ops.available(ops["MatMul"], (10, 0)) is True
    assert trt_ops.available(ops["STFT"], (10, 4)) is False
    assert trt_ops.available(ops["STFT"], (10, 5)) is True
    assert trt_ops.available(ops["RMSNormalization"], (10, 14)) is False
    assert trt_ops.available(ops["Attention"], (10, 3)) is None  # release unknown
    assert trt_ops.available(ops["Attention"], (10, 15)) is True
    assert trt_ops.available(ops["Unique"], (10, 15)) is False
