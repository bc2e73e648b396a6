"""How far a backend or precision drifts from the float32 ONNX Runtime run of the same export.

For each question both pipelines generate greedily (free running), and the candidate is then fed the
reference's tokens (teacher forcing) so that its logits can be compared step by step with the
reference's even after the greedy tokens part: cosine similarity, largest absolute error, and whether
the free-running tokens and the kept visual tokens are identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Agreement:
    """Running totals over questions for one candidate configuration."""

    questions: int = 0
    steps: int = 0
    cosines: list[float] = field(default_factory=list)
    max_abs_error: float = 0.0
    tokens_identical: int = 0  # questions whose free-running greedy tokens equal the reference's
    tokens_total: int = 0
    tokens_equal: int = 0  # generated tokens equal position by position (until the shorter ends)
    kept_identical: int = 0
    first_divergence: list[int] = field(default_factory=list)  # step of the first differing token, per differing question

    def add(self, reference: Any, candidate: Any, ref_logits: list[np.ndarray], cand_logits: list[np.ndarray]) -> None:
        self.questions += 1
        for a, b in zip(ref_logits, cand_logits):
            a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
            self.cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)))
            self.max_abs_error = max(self.max_abs_error, float(np.abs(a - b).max()))
            self.steps += 1
        ref, got = list(reference.token_ids), list(candidate.token_ids)
        self.tokens_identical += ref == got
        self.tokens_total += len(ref)
        self.tokens_equal += sum(x == y for x, y in zip(ref, got))
        if ref != got:
            self.first_divergence.append(next((i for i, (x, y) in enumerate(zip(ref, got)) if x != y), min(len(ref), len(got))))
        self.kept_identical += _same(reference.kept_indices, candidate.kept_indices)

    def to_json(self) -> dict[str, Any]:
        cos = np.asarray(self.cosines) if self.cosines else np.ones(1)
        return {
            "questions": self.questions, "teacher_forced_steps": self.steps,
            "logits_cosine_min": float(cos.min()), "logits_cosine_mean": float(cos.mean()),
            "logits_max_abs_error": self.max_abs_error,
            "greedy_questions_identical": self.tokens_identical,
            "greedy_tokens_equal": self.tokens_equal, "greedy_tokens": self.tokens_total,
            "first_divergence_steps": self.first_divergence,
            "kept_indices_identical": self.kept_identical,
        }


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return list(a) == list(b)


def compare(reference_pipe: Any, candidate_pipe: Any, image: Any, question: str, max_new_tokens: int,
            totals: Agreement) -> Any:
    """One question on both pipelines; adds to ``totals`` and returns the candidate's result."""
    from topv.export.validate import teacher_forced_logits

    ref = reference_pipe.generate(image, question, max_new_tokens=max_new_tokens)
    got = candidate_pipe.generate(image, question, max_new_tokens=max_new_tokens)
    inputs = reference_pipe.prepare_inputs(image, question)
    tokens = list(ref.token_ids) or [0]
    ref_logits, _ = teacher_forced_logits(reference_pipe, inputs, tokens)
    cand_logits, _ = teacher_forced_logits(candidate_pipe, inputs, tokens)
    totals.add(ref, got, ref_logits, cand_logits)
    return got


def summary(entry: dict[str, Any]) -> str:
    return (f"logits cosine min {entry['logits_cosine_min']:.5f} (mean {entry['logits_cosine_mean']:.6f}), "
            f"max |err| {entry['logits_max_abs_error']:.3g}; greedy tokens identical on "
            f"{entry['greedy_questions_identical']}/{entry['questions']} questions "
            f"({entry['greedy_tokens_equal']}/{entry['greedy_tokens']} tokens); kept tokens identical on "
            f"{entry['kept_indices_identical']}/{entry['questions']}")
