"""The export's self-check: every graph against its PyTorch module, the modules against the reference.

Three comparisons, all written to ``validation.json``:

1. graph vs module: each ONNX graph, run by ONNX Runtime on the inputs its module saw, at two prompt
   lengths (so a dynamic axis that was traced as a constant is caught). Floats: max |error| within
   ``rtol * max|reference| + atol`` (fp32: rtol 1e-3 - float32 rounding (1.2e-7) accumulated over the
   layers' reductions stays orders of magnitude below; fp16: 3e-2, float16's epsilon is 9.8e-4).
   Integer outputs (kept indices, positions) must be equal.
2. modules vs the PyTorch reference pipeline (transformers' own modules): prefill logits, kept indices
   and one decode step.
3. a short greedy generation through the exported folder vs ``topv.generate``: same tokens and kept
   indices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from topv.export.graphs import GraphPlan, StaticShapes

RTOL = {"fp32": 1e-3, "fp16": 3e-2}
ATOL = {"fp32": 1e-5, "fp16": 1e-3}


@dataclass
class OutputCheck:
    graph: str
    output: str
    prompt_tokens: int
    shape: list[int]
    max_abs_error: float
    max_abs_reference: float
    tolerance: float
    ok: bool

    def line(self) -> str:
        mark = "ok " if self.ok else "FAIL"
        return (
            f"  [{mark}] {self.graph}/{self.output} (S={self.prompt_tokens}): max|err| {self.max_abs_error:.3g} "
            f"<= {self.tolerance:.3g} (max|ref| {self.max_abs_reference:.3g})"
        )


def compare(graph: str, name: str, prompt_tokens: int, got: np.ndarray, want: np.ndarray, dtype: str) -> OutputCheck:
    want = np.asarray(want)
    got = np.asarray(got)
    if got.shape != want.shape:
        return OutputCheck(graph, name, prompt_tokens, list(got.shape), float("inf"), float("nan"), 0.0, False)
    if np.issubdtype(want.dtype, np.integer):
        err = float(np.abs(got.astype(np.int64) - want.astype(np.int64)).max()) if want.size else 0.0
        return OutputCheck(graph, name, prompt_tokens, list(got.shape), err, float(np.abs(want).max(initial=0)), 0.0, err == 0)
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    err = float(np.abs(g - w).max()) if w.size else 0.0
    ref = float(np.abs(w).max()) if w.size else 0.0
    tol = RTOL[dtype] * ref + ATOL[dtype]
    ok = bool(np.isfinite(g).all()) and err <= tol
    return OutputCheck(graph, name, prompt_tokens, list(got.shape), err, ref, tol, ok)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


@torch.no_grad()
def module_chain(
    plans: dict[str, GraphPlan], input_ids: torch.Tensor, pixel_values: torch.Tensor, shapes: StaticShapes, layer: int
) -> dict[str, tuple[dict[str, np.ndarray], list[np.ndarray]]]:
    """Each graph's feeds and its module's outputs, chained from one prompt exactly as the runtime chains them."""
    out: dict[str, tuple[dict[str, np.ndarray], list[np.ndarray]]] = {}
    param = next(plans["vision"].module.parameters())
    dev = param.device
    input_ids = input_ids.to(dev)
    pixel_values = pixel_values.to(device=dev, dtype=param.dtype)
    features = plans["vision"].module(pixel_values)
    out["vision"] = ({"pixel_values": _np(pixel_values)}, [_np(features)])
    head = plans["prefill_head"].module(input_ids, features)
    out["prefill_head"] = ({"input_ids": _np(input_ids), "image_features": _np(features)}, [_np(t) for t in head])
    hidden, positions = head[0], torch.arange(input_ids.shape[1], device=dev).unsqueeze(0)
    if "prune" in plans:
        prune_in = (head[0], head[1], head[2], input_ids)
        kept, hidden, positions = plans["prune"].module(*prune_in)
        names = plans["prune"].input_names
        out["prune"] = ({n: _np(t) for n, t in zip(names, prune_in)}, [_np(kept), _np(hidden), _np(positions)])
    tail = plans["prefill_tail"].module(hidden, positions)
    out["prefill_tail"] = ({"hidden_states": _np(hidden), "position_ids": _np(positions)}, [_np(t) for t in tail])
    # Decode: the prompt's keys/values in static buffers, then one token.
    decode = plans["decode_step"]
    past = []
    presents = list(head[3:]) + list(tail[1:])
    num_layers = len(presents) // 2
    for i in range(num_layers):
        capacity = shapes.capacity_head if i <= layer else shapes.capacity_tail
        for t in (presents[2 * i], presents[2 * i + 1]):
            buf = torch.zeros(t.shape[0], t.shape[1], capacity, t.shape[3], dtype=t.dtype, device=dev)
            buf[:, :, : t.shape[2]] = t
            past.append(buf)
    token = int(torch.argmax(tail[0][0]))
    seq = input_ids.shape[1]
    args = (
        torch.tensor([[token]], device=dev),
        torch.tensor([[seq]], device=dev),
        torch.tensor([seq], device=dev),
        torch.tensor([hidden.shape[1]], device=dev),
        *past,
    )
    step = decode.module(*args)
    out["decode_step"] = ({n: _np(t) for n, t in zip(decode.input_names, args)}, [_np(t) for t in step])
    return out


def check_graphs(
    sessions: dict[str, Any],
    plans: dict[str, GraphPlan],
    samples: list[tuple[torch.Tensor, torch.Tensor]],
    shapes: StaticShapes,
    layer: int,
    dtype: str,
) -> list[OutputCheck]:
    checks: list[OutputCheck] = []
    for input_ids, pixel_values in samples:
        chain = module_chain(plans, input_ids, pixel_values, shapes, layer)
        for name, (feeds, want) in chain.items():
            got = sessions[name].run(None, feeds)
            for out_name, g, w in zip(plans[name].output_names, got, want):
                checks.append(compare(name, out_name, int(input_ids.shape[1]), g, w, dtype))
    return checks


@torch.no_grad()
def check_against_reference(
    model: Any, plans: dict[str, GraphPlan], input_ids: torch.Tensor, pixel_values: torch.Tensor, *,
    layer: int, keep: int | None, config: Any, shapes: StaticShapes, dtype: str,
) -> list[OutputCheck]:
    """The exported modules against the PyTorch reference built from transformers' own modules."""
    from topv.reference.pipeline import ReferencePipeline

    ref = ReferencePipeline(model, layer=layer, keep=keep, method="topv", config=config)
    state = ref.prefill(input_ids.to(ref.device), pixel_values.to(ref.device))
    chain = module_chain(plans, input_ids, pixel_values, shapes, layer)
    seq = int(input_ids.shape[1])
    checks = [compare("reference", "prefill_logits", seq, chain["prefill_tail"][1][0], _np(state.logits.float()), dtype)]
    if keep is not None:
        kept = chain["prune"][1][0][0]
        checks.append(compare("reference", "kept_indices", seq, kept, np.asarray(state.kept_indices, dtype=np.int64), dtype))
    token = int(chain["decode_step"][0]["input_ids"][0, 0])
    step_logits = ref.decode_step(state, token, 0)
    checks.append(compare("reference", "decode_logits", seq, chain["decode_step"][1][0], _np(step_logits.float()), dtype))
    return checks


def graph_lines(checks: list[OutputCheck]) -> list[str]:
    """One line per graph: how many outputs were compared and the worst error against its tolerance."""
    lines = []
    for graph in dict.fromkeys(c.graph for c in checks):
        mine = [c for c in checks if c.graph == graph]
        worst = max(mine, key=lambda c: (not c.ok, c.max_abs_error / c.tolerance if c.tolerance else c.max_abs_error))
        status = "ok " if all(c.ok for c in mine) else "FAIL"
        lines.append(
            f"  [{status}] {graph}: {len(mine)} outputs compared; worst {worst.output} (S={worst.prompt_tokens}) "
            f"max|err| {worst.max_abs_error:.3g} <= {worst.tolerance:.3g}"
        )
    return lines


def summary(checks: list[OutputCheck]) -> dict[str, Any]:
    return {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}
