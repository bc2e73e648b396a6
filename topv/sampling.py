"""Choosing the next token from logits: greedy, or temperature + top-p sampling with a seeded RNG.

Written in NumPy and shared by the reference pipeline and every runtime backend, so the same logits and
seed give the same tokens everywhere. ``temperature`` 0 (the default) is greedy; above 0 samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from topv.errors import InputError


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InputError(f"{name} must be a finite number; got {value!r} ({type(value).__name__}).")
    return float(value)


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens: greedy when ``temperature == 0``, else sampling with ``top_p`` and ``seed``."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if _number("temperature", self.temperature) < 0:
            raise InputError(f"temperature must be >= 0 (0 is greedy); got {self.temperature!r}.")
        if not 0 < _number("top_p", self.top_p) <= 1:
            raise InputError(f"top_p must be in (0, 1]; got {self.top_p!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise InputError(f"seed must be an integer in 0..2**63-1; got {self.seed!r}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class TokenSampler:
    """Stateful sampler for one generation (owns the RNG)."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config
        self._rng = np.random.default_rng(config.seed)

    def __call__(self, logits: np.ndarray) -> int:
        logits = np.asarray(logits, dtype=np.float64).reshape(-1)
        if self.config.greedy:
            return int(np.argmax(logits))
        z = logits / self.config.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        if self.config.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            cutoff = int(np.searchsorted(np.cumsum(p[order]), self.config.top_p)) + 1
            filtered = np.zeros_like(p)
            filtered[order[:cutoff]] = p[order[:cutoff]]
            p = filtered / filtered.sum()
        return int(self._rng.choice(p.size, p=p))


def check_max_new_tokens(max_new_tokens: Any) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}.")
    return max_new_tokens


def stop_ids(eos_token_id: int | list[int] | tuple[int, ...] | None, extra: list[int] | None = None) -> frozenset[int]:
    ids: set[int] = set()
    if isinstance(eos_token_id, int):
        ids.add(eos_token_id)
    elif eos_token_id:
        ids.update(int(i) for i in eos_token_id)
    if extra:
        ids.update(int(i) for i in extra)
    return frozenset(ids)
