"""Arrays as numpy arrays on the host: what the ``ort-cpu`` and ``openvino`` backends share, including the
decode step's bound host buffers."""

from __future__ import annotations

from typing import Any

import numpy as np

from topv.artifact import names as n
from topv.runtime.kv import KVCache


class HostArrays:
    """``asarray``/``numpy``/``new_cache`` for a backend whose graphs read and write host memory (``self.kv``)."""

    kv: Any

    def asarray(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array)

    def numpy(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def new_cache(self) -> KVCache:
        return KVCache(self.kv)


class StepBuffers:
    """The decode step's host buffers, allocated once per KV state and bound to the runtime by address: the four
    small int64 inputs, the logits and the step's new key/value per layer."""

    def __init__(self, kv: Any, vocab_size: int) -> None:
        self.small = {name: np.zeros((1, 1) if name in (n.INPUT_IDS, n.POSITION_IDS) else (1,), dtype=np.int64)
                      for name in (n.INPUT_IDS, n.POSITION_IDS, n.PAST_LENGTH_HEAD, n.PAST_LENGTH_TAIL)}
        self.logits = np.zeros((1, vocab_size), dtype=np.float32)
        self.new = {name: np.zeros((1, kv.num_kv_heads, 1, kv.head_dim), dtype=kv.dtype)
                    for name in n.kv_names("new", range(kv.num_layers))}

    def inputs(self, cache: KVCache) -> dict[str, np.ndarray]:
        return {**self.small, **cache.feeds()}

    def outputs(self) -> dict[str, np.ndarray]:
        return {n.LOGITS: self.logits, **self.new}

    def set(self, token: int, position: int, cache: KVCache) -> None:
        self.small[n.INPUT_IDS][0, 0], self.small[n.POSITION_IDS][0, 0] = token, position
        self.small[n.PAST_LENGTH_HEAD][0], self.small[n.PAST_LENGTH_TAIL][0] = cache.length_head, cache.length_tail
