"""Answer normalization and matching."""

from __future__ import annotations

import pytest

from topv.evaluation.answers import answers_match, normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Red", "red"),
        ("  red. ", "red"),
        ("The circle", "circle"),
        ("a Red  Circle!", "red circle"),
        ("an apple", "apple"),
        ("three", "3"),
        ("Three.", "3"),
        ("3", "3"),
        ("zero", "0"),
        ("ten", "10"),
        ("Yes!", "yes"),
        ("don't", "dont"),
        ("", ""),
        ("the", ""),
        ("theme", "theme"),  # only whole-word articles are dropped
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_normalize_is_idempotent():
    for text in ["The Three red circles.", "A, b; c!", "two  TWO"]:
        once = normalize_answer(text)
        assert normalize_answer(once) == once


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("red", "red", True),
        ("Red.", "red", True),
        ("three", "3", True),
        ("3", "three", True),
        ("the square", "square", True),
        ("yes", "no", False),
        ("red circle", "red", False),
        ("2", "3", False),
        ("", "red", False),
    ],
)
def test_answers_match(pred, gold, ok):
    assert answers_match(pred, gold) is ok


def test_normalize_rejects_non_strings():
    with pytest.raises(TypeError):
        normalize_answer(3)  # type: ignore[arg-type]
