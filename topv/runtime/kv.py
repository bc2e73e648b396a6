"""Static, preallocated KV buffers sized by the export: full prompt below the pruning layer, kept prompt above.

One :class:`HostKVCache` holds a (1, kv_heads, capacity, head_dim) key and value buffer per layer.
Buffers are allocated once and reused by every generation; prefill copies the prompt's keys/values
into slots ``[0, length)`` and each decode step writes one slot in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from topv.errors import InternalError


@dataclass(frozen=True)
class KVLayout:
    """Shapes of the static cache, read from the manifest."""

    num_layers: int
    layer: int  # pruning layer K: layers 0..K use capacity_head
    num_kv_heads: int
    head_dim: int
    capacity_head: int
    capacity_tail: int
    dtype: str  # numpy dtype name

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "KVLayout":
        kv = manifest["kv_cache"]
        return cls(
            num_layers=kv["num_layers"],
            layer=manifest["pruning"]["layer"],
            num_kv_heads=kv["num_kv_heads"],
            head_dim=kv["head_dim"],
            capacity_head=kv["capacity_head"],
            capacity_tail=kv["capacity_tail"],
            dtype=kv["dtype"],
        )

    def capacity(self, i: int) -> int:
        return self.capacity_head if i <= self.layer else self.capacity_tail

    def shape(self, i: int) -> tuple[int, int, int, int]:
        return (1, self.num_kv_heads, self.capacity(i), self.head_dim)

    def nbytes(self) -> int:
        item = np.dtype(self.dtype).itemsize
        return sum(2 * int(np.prod(self.shape(i))) * item for i in range(self.num_layers))


class HostKVCache:
    """KV buffers in host memory (numpy), for CPU backends."""

    def __init__(self, layout: KVLayout) -> None:
        self.layout = layout
        self.keys = [np.zeros(layout.shape(i), dtype=layout.dtype) for i in range(layout.num_layers)]
        self.values = [np.zeros(layout.shape(i), dtype=layout.dtype) for i in range(layout.num_layers)]
        self.length_head = 0
        self.length_tail = 0

    def write_prompt(self, i: int, key: np.ndarray, value: np.ndarray) -> None:
        n = key.shape[2]
        if n > self.layout.capacity(i):
            raise InternalError(f"prompt of {n} tokens does not fit layer {i}'s {self.layout.capacity(i)} KV slots")
        self.keys[i][:, :, :n] = key
        self.values[i][:, :, :n] = value

    def write_token(self, i: int, key: np.ndarray, value: np.ndarray) -> None:
        slot = self.length_head if i <= self.layout.layer else self.length_tail
        if slot >= self.layout.capacity(i):
            raise InternalError(f"layer {i}'s KV buffer ({self.layout.capacity(i)} slots) is full")
        self.keys[i][:, :, slot] = key[:, :, 0]
        self.values[i][:, :, slot] = value[:, :, 0]

    def buffers(self) -> list[np.ndarray]:
        """``past_key.0, past_value.0, past_key.1, ...`` in graph input order."""
        out: list[np.ndarray] = []
        for k, v in zip(self.keys, self.values):
            out += [k, v]
        return out
