"""The graph chain, written once: vision -> prefill_head -> prune -> prefill_tail -> decode_step.

    image features ─► prefill_head ─► (prune) ─► prefill_tail ─► logits ─► decode_step ─► decode_step ...
                          │ KV of layers 0..K        │ KV of layers K+1.. (kept tokens only)
                          └────────────► static KV cache ◄────────────┘

Used by every backend through :meth:`Backend.run`, by the export (tracing and validating the graphs, on
the ``torch`` backend and ONNX Runtime), and by the Polygraphy input builder (:class:`Recorder`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from topv.artifact import names as n
from topv.artifact.manifest import KVLayout, Manifest, StaticShapes
from topv.runtime.backends.base import Backend, DecodeStep
from topv.runtime.kv import KVCache


@dataclass
class PrefillOutput:
    logits: np.ndarray  # (vocab,) float32 of the last prompt token
    kept_indices: list[int] | None  # kept positions within the visual tokens; None without pruning
    prompt_length: int
    kept_length: int  # tokens the layers after K hold for the prompt
    next_position: int  # the first decode position (prompt positions' maximum + 1)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ChainState:
    """One generation's KV cache and its bound decode step (reused by later generations)."""

    cache: KVCache
    step: DecodeStep
    next_position: int = 0
    steps: int = 0


class GraphChain:
    """Runs an export's graphs in order on one backend."""

    def __init__(self, backend: Backend, kv: KVLayout, shapes: StaticShapes, pruned: bool) -> None:
        self.backend, self.kv, self.shapes, self.pruned = backend, kv, shapes, pruned

    @classmethod
    def for_manifest(cls, backend: Backend, manifest: Manifest) -> "GraphChain":
        """The chain of an export folder's graphs (its manifest's KV layout, static shapes and pruning)."""
        return cls(backend, manifest.kv, manifest.shapes, manifest.pruning.enabled)

    def new_state(self) -> ChainState:
        cache = self.backend.new_cache()
        return ChainState(cache, self.backend.decoder(cache))

    def _now(self) -> float:
        self.backend.synchronize()
        return time.perf_counter()

    def vision(self, pixel_values: np.ndarray) -> Any:
        return self.backend.run(n.VISION, {n.PIXEL_VALUES: self.backend.asarray(pixel_values)}, {})[n.IMAGE_FEATURES]

    def prefill(self, state: ChainState, input_ids: np.ndarray, features: Any) -> PrefillOutput:
        """Prompt through every layer (pruning after layer K); fills the cache, returns the last logits."""
        b, cache, layer = self.backend, state.cache, self.kv.layer
        seq = int(input_ids.shape[1])
        kept_seq = self.shapes.kept_length(seq) if self.pruned else seq
        axes = {n.SEQUENCE: seq, n.KEPT_SEQUENCE: kept_seq}
        ids = b.asarray(np.ascontiguousarray(input_ids, dtype=np.int64))
        timings: dict[str, float] = {}
        t0 = self._now()
        head = b.run(n.PREFILL_HEAD, {n.INPUT_IDS: ids, n.IMAGE_FEATURES: features}, axes)
        self._write(cache, head, range(layer + 1))
        hidden, positions, kept = head[n.HIDDEN_STATES], head[n.POSITION_IDS], None
        timings[n.PREFILL_HEAD] = (t1 := self._now()) - t0
        if self.pruned:
            out = b.run(n.PRUNE, {n.HIDDEN_STATES: hidden, n.POSITION_IDS: positions, n.PRUNE_SOURCE: head[n.PRUNE_SOURCE],
                                  n.PRUNE_TARGET: head[n.PRUNE_TARGET], n.INPUT_IDS: ids}, axes)
            hidden, positions, kept = out[n.KEPT_HIDDEN_STATES], out[n.KEPT_POSITION_IDS], out[n.KEPT_INDICES]
        timings[n.PRUNE] = (t2 := self._now()) - t1
        tail = b.run(n.PREFILL_TAIL, {n.HIDDEN_STATES: hidden, n.POSITION_IDS: positions}, axes)
        self._write(cache, tail, range(layer + 1, self.kv.num_layers))
        logits = b.numpy(tail[n.LOGITS])[0]
        timings[n.PREFILL_TAIL] = self._now() - t2
        cache.length_head, cache.length_tail = seq, kept_seq
        state.next_position, state.steps = int(b.numpy(head[n.POSITION_IDS]).max()) + 1, 0
        return PrefillOutput(logits, None if kept is None else b.numpy(kept)[0].tolist(), seq, kept_seq,
                             state.next_position, timings)

    @staticmethod
    def _write(cache: KVCache, outputs: dict[str, Any], layers: range) -> None:
        for i in layers:
            key, value = n.kv_names("present", [i])
            cache.write_prompt(i, outputs[key], outputs[value])

    def decode(self, state: ChainState, token: int) -> np.ndarray:
        """Logits after feeding ``token`` as the next new token."""
        state.cache.check_room()
        logits = state.step(int(token), state.next_position + state.steps)
        state.cache.length_head += 1
        state.cache.length_tail += 1
        state.steps += 1
        return logits


@dataclass
class Call:
    """One recorded graph run, as host arrays."""

    graph: str
    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    axes: dict[str, int]


class Recorder(Backend):
    """A backend that runs another and records each graph's feeds and outputs (as host arrays).

    Its decode step goes through :meth:`run` (the generic one), so decode feeds are recorded too.
    """

    name = "recorder"

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.kv)
        self.inner = inner
        self.calls: list[Call] = []

    @classmethod
    def load(cls, folder: Any, manifest: Any, options: Any) -> "Recorder":  # pragma: no cover - wraps a backend
        raise TypeError("Recorder wraps a loaded backend: Recorder(backend)")

    def run(self, graph: str, feeds: dict[str, Any], axes: dict[str, int]) -> dict[str, Any]:
        out = self.inner.run(graph, feeds, axes)
        host = self.inner.numpy
        self.calls.append(Call(graph, {k: host(v).copy() for k, v in feeds.items()}, {k: host(v).copy() for k, v in out.items()},
                               dict(axes)))
        return out

    def asarray(self, array: np.ndarray) -> Any:
        return self.inner.asarray(array)

    def numpy(self, value: Any) -> np.ndarray:
        return self.inner.numpy(value)

    def new_cache(self) -> KVCache:
        return self.inner.new_cache()

    def synchronize(self) -> None:
        self.inner.synchronize()

    def first(self, graph: str) -> Call:
        return next(c for c in self.calls if c.graph == graph)
