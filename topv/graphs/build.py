"""The graphs of an export: their modules, I/O names and dynamic axes, built from a model and its family.

Naming rules are in ``topv.artifact.names``. Tracing needs each graph's real inputs; they come from
running the graph chain once on these modules (``topv.export.exporter``), so every graph is traced on
its predecessor's real output, exactly as the runtime chains them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from topv.artifact import names as n
from topv.families import Family
from topv.pruning.config import TopVConfig
from topv.spec import ModelSpec


@dataclass
class GraphModule:
    """One graph to export: the module and its ONNX interface."""

    name: str
    module: Any
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]

    @property
    def file(self) -> str:
        return n.graph_file(self.name)

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        outputs = self.module(*[feeds[name] for name in self.input_names])
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return dict(zip(self.output_names, outputs))


def _axes(names_to_axis: dict[str, tuple[int, str]]) -> dict[str, dict[int, str]]:
    return {name: {axis: label} for name, (axis, label) in names_to_axis.items()}


def build_graph_modules(model: Any, family: Family, spec: ModelSpec, *, layer: int, keep: int | None,
                        config: TopVConfig) -> dict[str, GraphModule]:
    """The modules of every graph of an export (pruning graph only when ``keep`` is set), in chain order."""
    from topv.graphs.modules import DecodeStepGraph, PrefillHeadGraph, PrefillTailGraph, PruneGraph

    pruned = keep is not None
    pos = 2 if spec.position_dims == 3 else 1  # the sequence axis of position ids: (1, S) or (3, 1, S)
    io = {g: n.io_names(g, spec.num_layers, layer, pruned) for g in n.GRAPHS}
    tail_seq = n.KEPT_SEQUENCE if pruned else n.SEQUENCE
    head_kv = {name: (2, n.SEQUENCE) for name in io[n.PREFILL_HEAD][1] if name.startswith("present_")}
    tail_kv = {name: (2, tail_seq) for name in io[n.PREFILL_TAIL][1] if name.startswith("present_")}
    graphs = [
        GraphModule(n.VISION, family.vision_graph(model, spec), *io[n.VISION], {}),
        GraphModule(n.PREFILL_HEAD, PrefillHeadGraph(model, family, spec, layer, pruned), *io[n.PREFILL_HEAD], _axes({
            n.INPUT_IDS: (1, n.SEQUENCE), n.HIDDEN_STATES: (1, n.SEQUENCE), n.POSITION_IDS: (pos, n.SEQUENCE), **head_kv})),
    ]
    if pruned:
        graphs.append(GraphModule(n.PRUNE, PruneGraph(spec, keep, config), *io[n.PRUNE], _axes({
            n.HIDDEN_STATES: (1, n.SEQUENCE), n.POSITION_IDS: (pos, n.SEQUENCE), n.INPUT_IDS: (1, n.SEQUENCE),
            n.KEPT_HIDDEN_STATES: (1, n.KEPT_SEQUENCE), n.KEPT_POSITION_IDS: (pos, n.KEPT_SEQUENCE)})))
    graphs += [
        GraphModule(n.PREFILL_TAIL, PrefillTailGraph(model, family, spec, layer), *io[n.PREFILL_TAIL], _axes({
            n.HIDDEN_STATES: (1, tail_seq), n.POSITION_IDS: (pos, tail_seq), **tail_kv})),
        GraphModule(n.DECODE_STEP, DecodeStepGraph(model, family, spec, layer), *io[n.DECODE_STEP], {}),
    ]
    for g in graphs:
        g.module.eval()
    return {g.name: g for g in graphs}
