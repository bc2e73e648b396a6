"""Choosing the next token from logits: greedy, or temperature + top-p sampling with a seeded RNG.

Written in NumPy and shared by the reference pipeline and all runtime backends, so the same logits and
seed give the same tokens everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from topv.errors import InputError


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens. ``temperature == 0`` or ``do_sample=False`` means greedy (argmax)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise InputError(f"temperature must be >= 0; got {self.temperature!r}.")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1]; got {self.top_p!r}.")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0


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
        z = z - z.max()
        p = np.exp(z)
        p /= p.sum()
        if self.config.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            cumulative = np.cumsum(p[order])
            cutoff = int(np.searchsorted(cumulative, self.config.top_p)) + 1
            keep = order[:cutoff]
            filtered = np.zeros_like(p)
            filtered[keep] = p[keep]
            p = filtered / filtered.sum()
        return int(self._rng.choice(p.size, p=p))


def check_max_new_tokens(max_new_tokens: int) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}.")
    return max_new_tokens


def stop_ids(eos_token_id: int | list[int] | None, extra: list[int] | None = None) -> frozenset[int]:
    ids: set[int] = set()
    if isinstance(eos_token_id, int):
        ids.add(eos_token_id)
    elif eos_token_id:
        ids.update(int(i) for i in eos_token_id)
    if extra:
        ids.update(int(i) for i in extra)
    return frozenset(ids)
