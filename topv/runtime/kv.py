"""The static KV cache: preallocated buffers sized by the export, on the host (numpy) or a device (torch).

One (1, kv_heads, capacity, head_dim) key and value buffer per layer: ``capacity_head`` slots for layers
0..K (the full prompt), ``capacity_tail`` after (the kept prompt), plus room for the new tokens.
Buffers are allocated once per generation state and reused; prefill copies the prompt's keys/values
into slots ``[0, length)`` and each decode step writes one slot in place. The same class serves every
backend: only the allocator differs.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from topv.artifact import names
from topv.artifact.manifest import KVLayout
from topv.errors import InternalError

def torch_dtype(name: str) -> Any:
    """The torch dtype of a numpy dtype name from the manifest (the one dtype map)."""
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64,
             "int32": torch.int32, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
    if name not in table:
        raise InternalError(f"no torch dtype for {name!r}")
    return table[name]

def numpy_allocator(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.zeros(shape, dtype=np.dtype(dtype))

def torch_allocator(device: Any) -> Callable[[tuple[int, ...], str], Any]:
    import torch

    return lambda shape, dtype: torch.zeros(shape, dtype=torch_dtype(dtype), device=device)

class KVCache:
    """KV buffers of one generation; ``length_head`` / ``length_tail`` are the filled slots (host ints)."""

    def __init__(self, layout: KVLayout, allocate: Callable[[tuple[int, ...], str], Any] = numpy_allocator) -> None:
        self.layout = layout
        self.keys = [allocate(layout.shape(i), layout.dtype) for i in range(layout.num_layers)]
        self.values = [allocate(layout.shape(i), layout.dtype) for i in range(layout.num_layers)]
        self.length_head = 0
        self.length_tail = 0

    def length(self, i: int) -> int:
        return self.length_head if i <= self.layout.layer else self.length_tail

    def write_prompt(self, i: int, key: Any, value: Any) -> None:
        """Copy a prefill's keys/values (1, kv_heads, n, head_dim) into slots [0, n) of layer ``i``."""
        n = int(key.shape[2])
        if n > self.layout.capacity(i):
            raise InternalError(f"prompt of {n} tokens does not fit layer {i}'s {self.layout.capacity(i)} KV slots")
        self.keys[i][:, :, :n] = key
        self.values[i][:, :, :n] = value

    def write_token(self, i: int, key: Any, value: Any) -> None:
        """Write one step's key/value (1, kv_heads, 1, head_dim) into the next free slot of layer ``i``."""
        slot = self.length(i)
        self.keys[i][:, :, slot] = key[:, :, 0]
        self.values[i][:, :, slot] = value[:, :, 0]

    def write_step(self, outputs: dict[str, Any]) -> None:
        """Write every layer's ``new_key.i`` / ``new_value.i`` of a decode step."""
        for i in range(self.layout.num_layers):
            key, value = names.kv_names("new", [i])
            self.write_token(i, outputs[key], outputs[value])

    def check_room(self) -> None:
        """Raise if the next decode step has no free slot (the chain checks before every step)."""
        for i in (0, self.layout.num_layers - 1):
            if self.length(i) >= self.layout.capacity(i):
                raise InternalError(f"layer {i}'s KV buffer ({self.layout.capacity(i)} slots) is full")

    def feeds(self) -> dict[str, Any]:
        """``{past_key.i: buffer, past_value.i: buffer}`` in the decode step's input order."""
        pairs = [b for pair in zip(self.keys, self.values) for b in pair]
        return dict(zip(names.kv_names("past", range(self.layout.num_layers)), pairs))
