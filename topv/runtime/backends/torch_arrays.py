"""Arrays as torch tensors on one device: what the ``torch`` and ``ort-cuda`` backends share."""

from __future__ import annotations

from typing import Any

import numpy as np

from topv.runtime.kv import KVCache, torch_allocator


class TorchArrays:
    """``asarray``/``numpy``/``new_cache``/``synchronize`` for a backend with ``self.torch``, ``self.device``, ``self.kv``."""

    torch: Any
    device: Any
    kv: Any

    def asarray(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def numpy(self, value: Any) -> np.ndarray:
        return value.detach().cpu().numpy()

    def new_cache(self) -> KVCache:
        return KVCache(self.kv, torch_allocator(self.device))

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
