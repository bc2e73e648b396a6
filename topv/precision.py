"""What decides the kept set, and the one rule for its precision.

TopV's kept tokens are decided by the vision graph (the image features), ``prefill_head`` (layers 0..K, whose
states at layer K are the solve's sources and targets) and ``prune`` (the cost, the Sinkhorn iterations and the
selection). By default every lower precision keeps those three graphs in float32 and uncompressed, so a faster
configuration keeps the float32 kept set:

* TensorRT engines built from a float32 export at fp16 or bf16 (``topv-build``),
* the ``openvino`` backend at bf16 / f16 and with int8 weights (``Pipeline.load(..., precision=...)``),
* int8 weights on ONNX Runtime (``topv-export --quantize int8``),
* the Polygraphy comparisons (``python -m topv.runtime.backends.trt.polygraphy``).

``kept_set="follow"`` is the explicit choice to let vision and layers 0..K follow the requested precision too
(faster: the vision tower is most of the prefill on small decoders); the kept set may then differ from float32's,
so measure it first (``topv-eval --agreement`` reports identical kept sets and answers). ``prune`` itself stays
float32 in every case: a few thousand operations, and Sinkhorn in fp16 or bf16 would rank by rounding.

An export without pruning has no kept set: every graph runs at the precision asked. A ``--dtype fp16`` export is
itself an explicit choice of precision for every graph (the solve computes in float32 inside it); its export check
reports the kept set it gives against the float32 reference.
"""

from __future__ import annotations

from topv.artifact import names as n
from topv.errors import ConfigError

KEPT_SET_CHOICES = ("float32", "follow")
#: The graphs whose numerics decide which tokens survive.
KEPT_SET_GRAPHS = (n.VISION, n.PREFILL_HEAD, n.PRUNE)
#: The solve itself: float32 whatever is chosen.
SOLVE_GRAPHS = (n.PRUNE,)


def check_kept_set(kept_set: str | None) -> str:
    """``kept_set`` validated (None: ``"float32"``).

    Raises:
        ConfigError: not one of :data:`KEPT_SET_CHOICES`.
    """
    value = "float32" if kept_set is None else kept_set
    if value not in KEPT_SET_CHOICES:
        raise ConfigError(f"kept_set must be one of {', '.join(KEPT_SET_CHOICES)} ('float32': the graphs that decide the "
                          f"kept tokens stay float32; 'follow': they follow the requested precision); got {kept_set!r}.")
    return value


def float32_graphs(pruned: bool, kept_set: str | None = "float32") -> frozenset[str]:
    """The graphs that run in float32 with uncompressed weights whatever precision or weight format is asked."""
    if not pruned:
        return frozenset()
    return frozenset(KEPT_SET_GRAPHS if check_kept_set(kept_set) == "float32" else SOLVE_GRAPHS)
