"""TensorRT optimization profiles derived from an export's manifest (plain functions, no TensorRT).

The manifest declares every dynamic axis by name with its range (``StaticShapes.axes``): ``sequence``
(prompt tokens S, visual tokens included) and ``kept_sequence`` (S' = S - N + k after pruning). Every
other dimension is fixed at export time. So:

* ``prefill_head`` and ``prune`` get a profile over ``sequence``; ``prune`` maps it to ``kept_sequence``
  on its outputs;
* ``prefill_tail`` gets a profile over ``kept_sequence``, whose ``opt`` is the image of ``sequence``'s
  ``opt`` under S -> S - N + k, so the head and the tail are tuned for the same prompt;
* ``vision``, ``prune``'s static inputs and ``decode_step`` have fixed shapes (min = opt = max).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from topv.artifact.manifest import Manifest
from topv.artifact.names import KEPT_SEQUENCE, SEQUENCE
from topv.errors import ArtifactError, ConfigError


@dataclass(frozen=True)
class AxisRange:
    """One symbolic axis: the smallest, the tuned-for and the largest value."""

    name: str
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ArtifactError(
                f"axis {self.name!r} has the range min={self.min}, opt={self.opt}, max={self.max}; it must satisfy "
                "1 <= min <= opt <= max. The manifest is damaged; re-export the model."
            )


@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max shapes of one engine input (``IOptimizationProfile.set_shape``)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def static(self) -> bool:
        return self.min == self.max

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: dict[str, list[int]]) -> "ShapeRange":
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))


@dataclass(frozen=True)
class GraphProfile:
    """The input shapes of one graph's engine; ``dynamic`` graphs need one optimization profile."""

    graph: str
    inputs: dict[str, ShapeRange] = field(default_factory=dict)
    axes: tuple[str, ...] = ()  # symbolic axes used by the inputs

    @property
    def dynamic(self) -> bool:
        return any(not r.static for r in self.inputs.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "dynamic": self.dynamic,
            "axes": list(self.axes),
            "inputs": {name: r.to_json() for name, r in self.inputs.items()},
        }

    @classmethod
    def from_json(cls, graph: str, data: dict[str, Any]) -> "GraphProfile":
        return cls(
            graph,
            {name: ShapeRange.from_json(r) for name, r in data["inputs"].items()},
            tuple(data.get("axes", ())),
        )


def axis_ranges(manifest: Manifest, opt_prompt_tokens: int | None = None) -> dict[str, AxisRange]:
    """The min/opt/max of every declared axis.

    ``sequence``'s ``opt`` defaults to the middle of [visual tokens, max prompt] (a prompt with the image and
    about half the text budget); ``kept_sequence``'s ``opt`` is its image S - N + k.

    Raises:
        ConfigError: ``opt_prompt_tokens`` is outside the ``sequence`` range.
    """
    shapes = manifest.shapes
    declared = shapes.axes()
    lo, hi = declared[SEQUENCE]
    if opt_prompt_tokens is not None and not lo <= opt_prompt_tokens <= hi:
        raise ConfigError(f"--opt-prompt-tokens {opt_prompt_tokens} is outside this export's prompt range {lo}..{hi}.")
    opt = opt_prompt_tokens if opt_prompt_tokens is not None else min(hi, max(lo, shapes.num_visual_tokens + (hi - shapes.num_visual_tokens) // 2))
    kept_lo, kept_hi = declared[KEPT_SEQUENCE]
    return {SEQUENCE: AxisRange(SEQUENCE, lo, opt, hi),
            KEPT_SEQUENCE: AxisRange(KEPT_SEQUENCE, kept_lo, min(kept_hi, max(kept_lo, shapes.kept_length(opt))), kept_hi)}


def graph_profile(manifest: Manifest, graph: str, ranges: dict[str, AxisRange]) -> GraphProfile:
    """Shapes of one graph's inputs; every symbolic dimension must be a declared axis.

    Raises:
        ArtifactError: the graph is not in the manifest, or an input has an undeclared dynamic dimension.
    """
    inputs: dict[str, ShapeRange] = {}
    used: list[str] = []
    for tensor in manifest.graph(graph).inputs:
        lo, opt, hi = [], [], []
        for i, dim in enumerate(tensor.shape):
            if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
                lo.append(dim), opt.append(dim), hi.append(dim)
                continue
            rng = ranges.get(dim) if isinstance(dim, str) else None
            if rng is None:
                raise ArtifactError(
                    f"input {tensor.name!r} of {graph} has dimension {i} = {dim!r}, which is neither fixed nor one of "
                    f"the declared axes ({', '.join(sorted(ranges))}); TensorRT needs a range for every dynamic "
                    "dimension. Run `topv-check OUT_DIR --target tensorrt` and re-export the model."
                )
            lo.append(rng.min), opt.append(rng.opt), hi.append(rng.max)
            if rng.name not in used:
                used.append(rng.name)
        inputs[tensor.name] = ShapeRange(tuple(lo), tuple(opt), tuple(hi))
    return GraphProfile(graph, inputs, tuple(used))


def derive_profiles(manifest: Manifest, opt_prompt_tokens: int | None = None) -> dict[str, GraphProfile]:
    """One :class:`GraphProfile` per graph in the manifest, in the manifest's order."""
    ranges = axis_ranges(manifest, opt_prompt_tokens)
    return {graph: graph_profile(manifest, graph, ranges) for graph in manifest.graphs}
