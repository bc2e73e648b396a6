"""The one interface every backend implements, and the options they take.

A backend runs one graph of an export at a time on its arrays (numpy on the host, torch tensors on a
device) and allocates KV caches where its graphs read them. Everything above it (the graph chain, the
``Pipeline``, the export's validation, the Polygraphy input files) is written once over :meth:`run`.

To add a backend: subclass :class:`Backend` in ``topv/runtime/backends/<name>/``, implement ``load``,
``run``, ``asarray``, ``numpy`` and ``new_cache`` (and optionally a faster ``decoder``), and register
its name in :data:`topv.runtime.backends.BACKENDS`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from topv.artifact import names
from topv.artifact.manifest import KVLayout, Manifest
from topv.runtime.kv import KVCache

DecodeStep = Callable[[int, int], np.ndarray]  # (token, position) -> logits (V,); writes the step's KV


@dataclass(frozen=True)
class BackendOptions:
    """How to open a backend.

    Attributes:
        threads: CPU threads (ONNX Runtime intra-op, torch); default ``TOPV_THREADS`` or every available core.
        device: ``cuda``/``cuda:N`` for GPU backends (and ``torch``), an OpenVINO device name for ``openvino``.
        cuda_graph: capture the decode step as a CUDA graph (GPU backends); None: ``TOPV_CUDA_GRAPH``.
        model_dir: the source checkpoint for the ``torch`` backend (default: the manifest's source).
        precision: ``openvino``: the inference precision of the graphs after the pruning decision: ``f32``
            (default; the tokens of ``ort-cpu``), ``bf16``, ``f16`` or ``auto`` (the device's default); every
            graph when the export does not prune.
        weights: ``openvino``: ``int8`` compresses those graphs' weights (NNCF, once per export, cached).
        low_memory: ``ort-cpu``: hold every weight once (no per-session prepacked copies; the weights stay in
            the memory-mapped ``weights.bin``), at some decode speed.
        profile_dir: ``ort-cpu``/``ort-cuda``: ONNX Runtime writes a per-node trace of every graph's runs there
            (collected by :meth:`Backend.end_profiling`; see ``topv.profiling.op_profile``).
        kept_set: ``openvino``: ``float32`` (default) keeps the graphs that decide the kept tokens in float32 and
            uncompressed whatever ``precision``/``weights`` say; ``follow`` lets vision and layers 0..K take them too
            (:mod:`topv.precision`).
    """

    threads: int | None = None
    device: str | None = None
    cuda_graph: bool | None = None
    model_dir: str | Path | None = None
    precision: str | None = None
    weights: str | None = None
    low_memory: bool = False
    profile_dir: str | Path | None = None
    kept_set: str = "float32"


class Backend(abc.ABC):
    """Runs graphs on one kind of hardware. Subclasses say how; the chain says what."""

    name: ClassVar[str]
    # which of BackendOptions' backend-specific fields (precision, weights, low_memory, profile_dir) this backend takes
    takes: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def check_options(cls, options: BackendOptions) -> None:
        """Refuse an option this backend would otherwise ignore.

        Raises:
            ConfigError: a backend-specific option set on a backend that does not take it.
        """
        from topv.errors import ConfigError

        from topv.precision import check_kept_set

        given = {"precision": options.precision not in (None, "f32"), "weights": options.weights is not None,
                 "low_memory": bool(options.low_memory), "profile_dir": options.profile_dir is not None,
                 "kept_set": check_kept_set(options.kept_set) != "float32"}
        for field_name, set_ in given.items():
            if set_ and field_name not in cls.takes:
                users = {"precision": "openvino", "weights": "openvino (ort-cpu: topv-export --quantize int8)",
                         "low_memory": "ort-cpu", "profile_dir": "ort-cpu and ort-cuda",
                         "kept_set": "openvino (ort-cpu int8: topv-export --kept-set; trt: topv-build --kept-set)"}[field_name]
                raise ConfigError(f"The {cls.name} backend does not take {field_name}={getattr(options, field_name)!r}; "
                                  f"it is an option of {users}.")

    def __init__(self, kv: KVLayout) -> None:
        self.kv = kv

    @classmethod
    @abc.abstractmethod
    def load(cls, folder: Path, manifest: Manifest, options: BackendOptions) -> "Backend":
        """Open an export folder's graphs (the folder has been verified)."""

    @abc.abstractmethod
    def run(self, graph: str, feeds: dict[str, Any], axes: dict[str, int]) -> dict[str, Any]:
        """Run one graph; ``axes`` gives the symbolic axes' values (``sequence``, ``kept_sequence``)."""

    @abc.abstractmethod
    def asarray(self, array: np.ndarray) -> Any:
        """A host array as this backend's array (a no-op on host backends)."""

    @abc.abstractmethod
    def numpy(self, value: Any) -> np.ndarray:
        """This backend's array on the host."""

    @abc.abstractmethod
    def new_cache(self) -> KVCache:
        """A KV cache where this backend's decode step reads it."""

    def decoder(self, cache: KVCache) -> DecodeStep:
        """The decode step bound to ``cache``. This generic version feeds the buffers through :meth:`run`;
        backends override it to bind the buffers once (IOBinding, tensor addresses, CUDA graphs)."""

        def step(token: int, position: int) -> np.ndarray:
            feeds = {
                names.INPUT_IDS: self.asarray(np.array([[token]], dtype=np.int64)),
                names.POSITION_IDS: self.asarray(np.array([[position]], dtype=np.int64)),
                names.PAST_LENGTH_HEAD: self.asarray(np.array([cache.length_head], dtype=np.int64)),
                names.PAST_LENGTH_TAIL: self.asarray(np.array([cache.length_tail], dtype=np.int64)),
                **cache.feeds(),
            }
            out = self.run(names.DECODE_STEP, feeds, {})
            cache.write_step(out)
            return self.numpy(out[names.LOGITS])[0]

        return step

    def synchronize(self) -> None:
        """Wait for queued device work (stage timings are taken after it)."""

    def end_profiling(self) -> dict[str, Path]:
        """Stop the per-node profiling that ``profile_dir`` started; the trace file of each graph."""
        return {}

    def close(self) -> None:
        """Release sessions and device memory."""
