"""The bundled synthetic VQA task: shape scenes, position-dependent questions, answer matching, splits."""

from topv.data.answers import answers_match, normalize_answer

__all__ = ["answers_match", "normalize_answer"]
