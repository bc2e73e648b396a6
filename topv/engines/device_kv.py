"""The static KV cache in device memory (torch tensors), for the TensorRT backend.

Same layout as :class:`topv.runtime.kv.HostKVCache`: one (1, kv_heads, capacity, head_dim) key and value
buffer per layer, ``capacity_head`` slots for layers 0..K and ``capacity_tail`` after. Allocated once;
the decode engine reads the buffers by address and each step's new key/value is written into slot
``past_length`` on the device (``index_copy_`` with the device-side ``past_length`` tensor, so the write
can be captured in a CUDA graph and needs no host round trip).
"""

from __future__ import annotations

from typing import Any

from topv.errors import InternalError
from topv.runtime.kv import KVLayout

def torch_dtype(torch: Any, numpy_name: str) -> Any:
    """The torch dtype for a numpy dtype name from the manifest."""
    names = {
        "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
        "int64": torch.int64, "int32": torch.int32, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
    }
    try:
        return names[str(numpy_name)]
    except KeyError:
        raise InternalError(f"no torch dtype for {numpy_name!r}") from None


class DeviceKVCache:
    """KV buffers on one device; ``length_head``/``length_tail`` are tracked on the host."""

    def __init__(self, layout: KVLayout, torch: Any, device: Any) -> None:
        self.layout = layout
        dtype = torch_dtype(torch, layout.dtype)
        self.keys = [torch.zeros(layout.shape(i), dtype=dtype, device=device) for i in range(layout.num_layers)]
        self.values = [torch.zeros(layout.shape(i), dtype=dtype, device=device) for i in range(layout.num_layers)]
        self.length_head = 0
        self.length_tail = 0

    def write_prompt(self, i: int, key: Any, value: Any) -> None:
        """Copy a prefill's keys/values (1, kv_heads, n, head_dim) into slots [0, n) of layer ``i``."""
        n = int(key.shape[2])
        if n > self.layout.capacity(i):
            raise InternalError(f"prompt of {n} tokens does not fit layer {i}'s {self.layout.capacity(i)} KV slots")
        self.keys[i][:, :, :n].copy_(key)
        self.values[i][:, :, :n].copy_(value)

    def write_token(self, i: int, slot: Any, key: Any, value: Any) -> None:
        """Write one step's key/value (1, kv_heads, 1, head_dim) into slot ``slot`` (a device int64 tensor of shape (1,))."""
        self.keys[i].index_copy_(2, slot, key)
        self.values[i].index_copy_(2, slot, value)

    def check_room(self) -> None:
        """Raise if the next decode step has no free slot."""
        for i, length in ((0, self.length_head), (self.layout.num_layers - 1, self.length_tail)):
            if length >= self.layout.capacity(i):
                raise InternalError(f"layer {i}'s KV buffer ({self.layout.capacity(i)} slots) is full")

    def buffers(self) -> list[Any]:
        """``past_key.0, past_value.0, past_key.1, ...`` in graph input order."""
        out: list[Any] = []
        for k, v in zip(self.keys, self.values):
            out += [k, v]
        return out
