"""Every name an export folder uses: graphs, their tensors, and the symbolic axes.

One place, so that the exporter, the graph chain, every backend, the TensorRT profiles and the checks
agree. Per-layer tensors are ``<kind>_<key|value>.<layer>`` with ``kind`` = ``present`` (a prefill
output), ``past`` (a decode-step input: the static KV buffer) or ``new`` (a decode-step output: the
step's key/value, written into the buffer by the runtime).
"""

from __future__ import annotations

# Graphs, in the order a request runs them.
VISION = "vision"
PREFILL_HEAD = "prefill_head"
PRUNE = "prune"
PREFILL_TAIL = "prefill_tail"
DECODE_STEP = "decode_step"
GRAPHS = (VISION, PREFILL_HEAD, PRUNE, PREFILL_TAIL, DECODE_STEP)

# Tensors crossing graphs.
PIXEL_VALUES = "pixel_values"
IMAGE_FEATURES = "image_features"
INPUT_IDS = "input_ids"
HIDDEN_STATES = "hidden_states"
POSITION_IDS = "position_ids"
PRUNE_SOURCE = "prune_source"
PRUNE_TARGET = "prune_target"
KEPT_INDICES = "kept_indices"
KEPT_HIDDEN_STATES = "kept_hidden_states"
KEPT_POSITION_IDS = "kept_position_ids"
LOGITS = "logits"
PAST_LENGTH_HEAD = "past_length_head"
PAST_LENGTH_TAIL = "past_length_tail"

# Symbolic axes: prompt tokens S (visual tokens included), and S' = S - N + kept visual tokens.
SEQUENCE = "sequence"
KEPT_SEQUENCE = "kept_sequence"
AXES = (SEQUENCE, KEPT_SEQUENCE)


def kv_names(kind: str, layers: range | list[int]) -> list[str]:
    """``[<kind>_key.i, <kind>_value.i for i in layers]``."""
    return [f"{kind}_{t}.{i}" for i in layers for t in ("key", "value")]


def graph_file(graph: str) -> str:
    return f"{graph}.onnx"


def io_names(graph: str, num_layers: int, layer: int, pruned: bool) -> tuple[list[str], list[str]]:
    """``(inputs, outputs)`` of a graph for a decoder of ``num_layers`` whose layers 0..``layer`` see every token."""
    head, tail, every = range(layer + 1), range(layer + 1, num_layers), range(num_layers)
    prune_io = [PRUNE_SOURCE, PRUNE_TARGET] if pruned else []
    table = {
        VISION: ([PIXEL_VALUES], [IMAGE_FEATURES]),
        PREFILL_HEAD: ([INPUT_IDS, IMAGE_FEATURES], [HIDDEN_STATES, POSITION_IDS, *prune_io, *kv_names("present", head)]),
        PRUNE: (
            [HIDDEN_STATES, POSITION_IDS, PRUNE_SOURCE, PRUNE_TARGET, INPUT_IDS],
            [KEPT_INDICES, KEPT_HIDDEN_STATES, KEPT_POSITION_IDS],
        ),
        PREFILL_TAIL: ([HIDDEN_STATES, POSITION_IDS], [LOGITS, *kv_names("present", tail)]),
        DECODE_STEP: (
            [INPUT_IDS, POSITION_IDS, PAST_LENGTH_HEAD, PAST_LENGTH_TAIL, *kv_names("past", every)],
            [LOGITS, *kv_names("new", every)],
        ),
    }
    return table[graph]
