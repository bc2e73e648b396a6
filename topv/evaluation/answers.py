"""Answer normalization for short VQA answers (single words: colours, shapes, numbers, yes/no).

``normalize_answer`` follows the spirit of the VQA evaluation's normalization: lower case, punctuation
removed, the articles a/an/the dropped, number words written as digits, whitespace collapsed.
"""

from __future__ import annotations

import re

NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """``"The Three."`` -> ``"3"``; ``" A red  circle! "`` -> ``"red circle"``.

    Lower case; punctuation removed (``"don't"`` -> ``"dont"``); articles a/an/the dropped; number words
    zero..ten mapped to digits; runs of whitespace collapsed to one space.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_answer expects a string; got {type(text).__name__}")
    words = _PUNCT.sub("", text.lower()).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words if w not in ARTICLES)


def answers_match(pred: str, gold: str) -> bool:
    """Whether a predicted answer equals the gold answer after :func:`normalize_answer` on both."""
    return normalize_answer(pred) == normalize_answer(gold)
