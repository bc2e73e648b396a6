"""Running an export folder's graphs with ONNX Runtime on the CPU.

Sessions are created once. The decode step is bound with IOBinding: the static KV buffers, the four
small inputs and the outputs are numpy arrays wrapped (not copied) as OrtValues, so a step costs one
``run_with_iobinding`` plus a one-slot write per layer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from topv.errors import BackendUnavailableError
from topv.runtime.kv import HostKVCache, KVLayout


def default_threads() -> int:
    """``TOPV_THREADS`` if set, else every core this process may run on."""
    from topv.config import default_threads as from_env

    configured = from_env()
    if configured:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is not installed; install it with `pip install onnxruntime` (CPU) or "
            "`pip install onnxruntime-gpu` (CUDA), or use backend='torch'."
        ) from exc
    return onnxruntime


def session_options(threads: int) -> Any:
    """Explicit threads and no spinning: idle ONNX Runtime threads otherwise spin and steal cores."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


class _DecodeBinding:
    """IOBinding of the decode step over one KV cache's buffers."""

    def __init__(self, session: Any, cache: HostKVCache, vocab: int) -> None:
        ort = import_onnxruntime()
        layout = cache.layout
        self.cache = cache
        self.input_ids = np.zeros((1, 1), dtype=np.int64)
        self.position_ids = np.zeros((1, 1), dtype=np.int64)
        self.length_head = np.zeros((1,), dtype=np.int64)
        self.length_tail = np.zeros((1,), dtype=np.int64)
        self.logits = np.zeros((1, vocab), dtype=np.float32)
        self.new = [np.zeros((1, layout.num_kv_heads, 1, layout.head_dim), dtype=layout.dtype) for _ in range(2 * layout.num_layers)]
        self.binding = session.io_binding()
        self._keep = []  # OrtValues must outlive the binding
        names = [i.name for i in session.get_inputs()]
        small = [self.input_ids, self.position_ids, self.length_head, self.length_tail]
        for name, array in zip(names, small + cache.buffers()):
            value = ort.OrtValue.ortvalue_from_numpy(array)
            self._keep.append(value)
            self.binding.bind_ortvalue_input(name, value)
        for name, array in zip([o.name for o in session.get_outputs()], [self.logits, *self.new]):
            value = ort.OrtValue.ortvalue_from_numpy(array)
            self._keep.append(value)
            self.binding.bind_ortvalue_output(name, value)


class OrtCpuExecutor:
    """Runs vision, prefill (head, prune, tail) and decode steps on ONNX Runtime's CPU provider."""

    providers = ("CPUExecutionProvider",)

    def __init__(self, folder: Path, manifest: dict[str, Any], *, threads: int | None = None) -> None:
        ort = import_onnxruntime()
        self.manifest = manifest
        self.layout = KVLayout.from_manifest(manifest)
        self.threads = threads or default_threads()
        opts = session_options(self.threads)
        available = ort.get_available_providers()
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime here offers {available}, not {missing}; install the matching onnxruntime package."
            )
        self.sessions = {
            name: ort.InferenceSession(str(folder / entry["file"]), sess_options=opts, providers=list(self.providers))
            for name, entry in manifest["graphs"].items()
        }
        self.vocab = manifest["model"]["spec"]["vocab_size"]
        self.has_prune = "prune" in self.sessions

    # One cache (+ its decode binding) per concurrent generation.
    def new_state(self) -> dict[str, Any]:
        cache = HostKVCache(self.layout)
        return {"cache": cache, "decode": _DecodeBinding(self.sessions["decode_step"], cache, self.vocab)}

    def vision(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.sessions["vision"].run(None, {"pixel_values": pixel_values})[0]

    def prefill(self, state: dict[str, Any], input_ids: np.ndarray, features: np.ndarray) -> dict[str, Any]:
        cache: HostKVCache = state["cache"]
        layer = self.layout.layer
        timings = {}
        t0 = time.perf_counter()
        head = self.sessions["prefill_head"].run(None, {"input_ids": input_ids, "image_features": features})
        hidden, source, target, presents = head[0], head[1], head[2], head[3:]
        for i in range(layer + 1):
            cache.write_prompt(i, presents[2 * i], presents[2 * i + 1])
        timings["prefill_head"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        kept = None
        if self.has_prune:
            kept, hidden, positions = self.sessions["prune"].run(
                None, {"hidden_states": hidden, "prune_source": source, "prune_target": target, "input_ids": input_ids}
            )
        else:
            positions = np.arange(input_ids.shape[1], dtype=np.int64)[None]
        timings["prune"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        tail = self.sessions["prefill_tail"].run(None, {"hidden_states": hidden, "position_ids": positions})
        for j, i in enumerate(range(layer + 1, self.layout.num_layers)):
            cache.write_prompt(i, tail[1 + 2 * j], tail[2 + 2 * j])
        timings["prefill_tail"] = time.perf_counter() - t0
        cache.length_head = int(input_ids.shape[1])
        cache.length_tail = int(hidden.shape[1])
        return {
            "logits": tail[0][0],
            "kept_indices": None if kept is None else kept[0].tolist(),
            "kept_length": cache.length_tail,
            "timings": timings,
        }

    def decode(self, state: dict[str, Any], token: int, position: int) -> np.ndarray:
        binding: _DecodeBinding = state["decode"]
        cache = binding.cache
        binding.input_ids[0, 0] = token
        binding.position_ids[0, 0] = position
        binding.length_head[0] = cache.length_head
        binding.length_tail[0] = cache.length_tail
        self.sessions["decode_step"].run_with_iobinding(binding.binding)
        for i in range(self.layout.num_layers):
            cache.write_token(i, binding.new[2 * i], binding.new[2 * i + 1])
        cache.length_head += 1
        cache.length_tail += 1
        return binding.logits[0]

    def input_shapes(self, graph: str) -> dict[str, list[Any]]:
        """The session's declared input shapes (ints or symbolic names)."""
        return {i.name: list(i.shape) for i in self.sessions[graph].get_inputs()}
