"""PyTorch helpers of the family plug-ins: export patches and a function-backed module.

An export patch is a record (owner, attribute, replacement) applied in ``__enter__`` and restored in
``__exit__``, so the rest of the process never sees it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

_softmax = F.softmax
_layer_norm = F.layer_norm


def _softmax_fp32(input: torch.Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> torch.Tensor:
    out_dtype = dtype if dtype is not None else input.dtype
    return _softmax(input.float(), dim=dim).to(out_dtype)


def _layer_norm_fp32(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    w = weight.float() if weight is not None else None
    b = bias.float() if bias is not None else None
    return _layer_norm(input.float(), normalized_shape, w, b, eps).to(input.dtype)


FP32_REDUCTIONS = ((F, "softmax", _softmax_fp32), (F, "layer_norm", _layer_norm_fp32))


@contextlib.contextmanager
def patched(patches: tuple[tuple[Any, str, Any], ...]) -> Iterator[None]:
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def fp32_reductions(enabled: bool) -> contextlib.AbstractContextManager:
    """Softmax and LayerNorm computed in float32 (inputs cast up, results cast back) for fp16 graphs."""
    return patched(FP32_REDUCTIONS) if enabled else contextlib.nullcontext()


class FunctionModule(nn.Module):
    """A module whose forward is ``fn``; ``modules`` are registered so parameters, devices and ``eval()`` follow."""

    def __init__(self, fn: Callable[..., Any], **modules: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)
