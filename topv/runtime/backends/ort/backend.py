"""``ort-cpu``: every graph in an ONNX Runtime CPU session; the decode step bound once with IOBinding.

``low_memory`` holds every weight once: each session otherwise keeps its own packed copy of every MatMul
weight (prepacking) and its own mapping of ``weights.bin`` (the decoder's weights are in a prefill graph and
in the decode step); with it, prepacking is off and every session reads the same memory-mapped pages. A float16
export then runs unoptimized: the CPU provider has no float16 MatMul on x86, and its optimizer would otherwise
store a float32 copy of every weight (twice the float16 bytes); unoptimized, each weight is cast when used.

The static KV buffers, the four small decode inputs and the decode outputs are numpy arrays wrapped
(not copied) as OrtValues, so a step costs one ``run_with_iobinding`` plus a one-slot write per layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from topv.artifact import names as n
from topv.artifact.manifest import Manifest
from topv.errors import BackendUnavailableError
from topv.runtime.backends.base import Backend, BackendOptions, DecodeStep
from topv.runtime.backends.host_arrays import HostArrays, StepBuffers
from topv.runtime.backends.ort.session import (
    SharedWeights,
    check_session_io,
    end_profiling,
    import_onnxruntime,
    open_session,
    profile_prefix,
    session_options,
)
from topv.runtime.kv import KVCache


class OrtBackend(HostArrays, Backend):
    name = "ort-cpu"
    takes = frozenset({"low_memory", "profile_dir"})
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __init__(self, manifest: Manifest, sessions: dict[str, Any], shared: SharedWeights | None = None) -> None:
        super().__init__(manifest.kv)
        self.manifest = manifest
        self.sessions = sessions
        self.shared = shared  # low_memory: the mapped weights, alive as long as the sessions
        self.inputs = {g: [i.name for i in s.get_inputs()] for g, s in sessions.items()}
        self.outputs = {g: [o.name for o in s.get_outputs()] for g, s in sessions.items()}

    @classmethod
    def load(cls, folder: Path, manifest: Manifest, options: BackendOptions) -> "OrtBackend":
        ort = import_onnxruntime()
        missing = [p for p in cls.providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime here offers {ort.get_available_providers()}, not {missing}; install the matching onnxruntime package."
            )
        shared = SharedWeights(Path(folder)) if options.low_memory else None
        # low_memory float16 on the CPU provider: unoptimized, or the session would hold a float32 copy of the weights
        optimize = not (shared is not None and manifest.dtype == "fp16" and cls.providers[0] == "CPUExecutionProvider")
        sessions = {}
        for g, info in manifest.graphs.items():
            opts = session_options(options.threads, low_memory=shared is not None,  # initializers are per SessionOptions
                                   profile=profile_prefix(options, g), optimize=optimize)
            if shared is not None:
                shared.add_to(opts, Path(folder) / info.file)
            sessions[g] = open_session(Path(folder) / info.file, opts, list(cls.providers))
        for g, info in manifest.graphs.items():
            check_session_io(sessions[g], info)
        return cls(manifest, sessions, shared)

    def run(self, graph: str, feeds: dict[str, Any], axes: dict[str, int]) -> dict[str, Any]:
        feeds = {name: feeds[name] for name in self.inputs[graph]}  # an input a graph does not use is not in it
        return dict(zip(self.outputs[graph], self.sessions[graph].run(None, feeds)))

    def decoder(self, cache: KVCache) -> DecodeStep:
        ort = import_onnxruntime()
        session = self.sessions[n.DECODE_STEP]
        buffers = StepBuffers(self.kv, self.manifest.spec.vocab_size)
        binding = session.io_binding()
        keep = []  # OrtValues must outlive the binding
        feeds = buffers.inputs(cache)
        for name in self.inputs[n.DECODE_STEP]:
            keep.append(ort.OrtValue.ortvalue_from_numpy(feeds[name]))
            binding.bind_ortvalue_input(name, keep[-1])
        for name, array in buffers.outputs().items():
            keep.append(ort.OrtValue.ortvalue_from_numpy(array))
            binding.bind_ortvalue_output(name, keep[-1])

        def step(token: int, position: int) -> np.ndarray:
            buffers.set(token, position, cache)
            session.run_with_iobinding(binding)
            cache.write_step(buffers.new)
            _ = keep
            return buffers.logits[0].copy()

        return step

    def end_profiling(self) -> dict[str, Path]:
        return end_profiling(self.sessions)

    def close(self) -> None:
        self.sessions.clear()
        if self.shared is not None:
            self.shared.close()

    def input_shapes(self, graph: str) -> dict[str, list[Any]]:
        """The session's declared input shapes (ints or symbolic names)."""
        return {i.name: list(i.shape) for i in self.sessions[graph].get_inputs()}
