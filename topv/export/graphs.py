"""The graphs of an export: their modules, example inputs, I/O names and dynamic axes.

Naming rules (docs/DESIGN.md): graph files are ``<graph>.onnx``; tensors crossing graphs keep one
name (``image_features``, ``hidden_states``, ...); per-layer tensors are ``<kind>_<key|value>.<layer>``
with ``kind`` = ``present`` (prefill output), ``past`` (decode input) or ``new`` (decode output).
Symbolic axes: ``sequence`` = prompt tokens S; ``kept_sequence`` = S - N + kept visual tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from topv.export.modules import DecodeStepGraph, PrefillHeadGraph, PrefillTailGraph, PruneGraph, VisionGraph
from topv.models.spec import ModelSpec
from topv.pruning.config import TopVConfig

SEQ = "sequence"
KEPT_SEQ = "kept_sequence"


def kv_names(kind: str, layers: range) -> list[str]:
    return [f"{kind}_{t}.{i}" for i in layers for t in ("key", "value")]


@dataclass
class GraphPlan:
    name: str
    module: torch.nn.Module
    args: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


@dataclass(frozen=True)
class StaticShapes:
    """Shapes fixed by the export."""

    max_prompt_tokens: int  # P
    max_new_tokens: int  # M
    kept_visual_tokens: int  # visual tokens after pruning (grid keep + CLS with "full")
    num_visual_tokens: int  # N

    @property
    def max_kept_prompt_tokens(self) -> int:
        return self.max_prompt_tokens - self.num_visual_tokens + self.kept_visual_tokens

    @property
    def capacity_head(self) -> int:
        """KV slots of layers 0..K: the full prompt plus the new tokens."""
        return self.max_prompt_tokens + self.max_new_tokens

    @property
    def capacity_tail(self) -> int:
        """KV slots of layers K+1..: the kept prompt plus the new tokens."""
        return self.max_kept_prompt_tokens + self.max_new_tokens


def plan_graphs(
    model: Any,
    spec: ModelSpec,
    *,
    layer: int,
    keep: int | None,
    config: TopVConfig,
    shapes: StaticShapes,
    sample: dict[str, torch.Tensor],
) -> list[GraphPlan]:
    """Build the modules and trace inputs of every graph from one real sample (input_ids, pixel_values).

    Tracing runs the modules in order so that each graph is traced on the previous one's real output.
    """
    head_layers = range(0, layer + 1)
    tail_layers = range(layer + 1, spec.num_layers)
    plans: list[GraphPlan] = []
    with torch.no_grad():
        vision = VisionGraph(model).eval()
        param = next(model.parameters())
        dev = param.device
        pixel_values = sample["pixel_values"].to(device=dev, dtype=param.dtype)
        features = vision(pixel_values)
        plans.append(GraphPlan("vision", vision, (pixel_values,), ["pixel_values"], ["image_features"], {}))

        head = PrefillHeadGraph(model, spec, layer).eval()
        input_ids = sample["input_ids"].to(dev)
        head_out = head(input_ids, features)
        head_outputs = ["hidden_states", "prune_source", "prune_target", *kv_names("present", head_layers)]
        plans.append(
            GraphPlan(
                "prefill_head",
                head,
                (input_ids, features),
                ["input_ids", "image_features"],
                head_outputs,
                {"input_ids": {1: SEQ}, "hidden_states": {1: SEQ}, **{n: {2: SEQ} for n in head_outputs[3:]}},
            )
        )
        hidden, positions = head_out[0], torch.arange(input_ids.shape[1], device=dev).unsqueeze(0)
        if keep is not None:
            prune = PruneGraph(spec, keep, config).eval()
            prune_args = (head_out[0], head_out[1], head_out[2], input_ids)
            _, hidden, positions = prune(*prune_args)
            plans.append(
                GraphPlan(
                    "prune",
                    prune,
                    prune_args,
                    ["hidden_states", "prune_source", "prune_target", "input_ids"],
                    ["kept_indices", "kept_hidden_states", "kept_position_ids"],
                    {
                        "hidden_states": {1: SEQ},
                        "input_ids": {1: SEQ},
                        "kept_hidden_states": {1: KEPT_SEQ},
                        "kept_position_ids": {1: KEPT_SEQ},
                    },
                )
            )
        tail = PrefillTailGraph(model, spec, layer).eval()
        tail_outputs = ["logits", *kv_names("present", tail_layers)]
        plans.append(
            GraphPlan(
                "prefill_tail",
                tail,
                (hidden, positions),
                ["hidden_states", "position_ids"],
                tail_outputs,
                {"hidden_states": {1: KEPT_SEQ}, "position_ids": {1: KEPT_SEQ}, **{n: {2: KEPT_SEQ} for n in tail_outputs[1:]}},
            )
        )
        decode = DecodeStepGraph(model, spec, layer).eval()
        dtype = head_out[0].dtype
        past = []
        for i in range(spec.num_layers):
            capacity = shapes.capacity_head if i <= layer else shapes.capacity_tail
            buf = torch.zeros(1, spec.num_kv_heads, capacity, spec.head_dim, dtype=dtype, device=dev)
            past += [buf, buf.clone()]
        seq = input_ids.shape[1]
        decode_args = (
            torch.tensor([[5]], dtype=torch.int64, device=dev),
            torch.tensor([[seq]], dtype=torch.int64, device=dev),
            torch.tensor([seq], dtype=torch.int64, device=dev),
            torch.tensor([hidden.shape[1]], dtype=torch.int64, device=dev),
            *past,
        )
        plans.append(
            GraphPlan(
                "decode_step",
                decode,
                decode_args,
                ["input_ids", "position_ids", "past_length_head", "past_length_tail", *kv_names("past", range(spec.num_layers))],
                ["logits", *kv_names("new", range(spec.num_layers))],
                {},
            )
        )
    return plans
