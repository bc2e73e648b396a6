"""``openvino``: every graph of an export compiled by OpenVINO (it reads the ONNX files directly).

* Device: ``CPU`` by default, any other OpenVINO device by name (``GPU``, ``GPU.1``, ``NPU``) where present.
* Precision (``BackendOptions.precision``): ``f32`` (default) gives the tokens of ``ort-cpu``; ``bf16``,
  ``f16`` or ``auto`` (the device's own default: bf16 on CPUs with AVX512_BF16 or AMX) apply only to the
  graphs after the pruning decision (``prefill_tail``, ``decode_step``). ``vision``, ``prefill_head`` and
  ``prune`` stay float32, because the kept tokens depend on them: measured on the bundled model, bf16 in
  the vision tower alone changed the kept set of 10 of 60 questions. An export without pruning has no kept
  tokens to protect: every graph then runs at the precision (and weights) asked.
* Weights (``BackendOptions.weights``): ``int8`` compresses the same graphs' weights with NNCF
  (``INT8_ASYM``, per channel, data free) once per export and keeps the result in topv's cache.
* The decode step is one InferRequest per KV state with every tensor bound once (the static KV buffers,
  the four small inputs, the outputs), so a step is one ``infer()`` plus a one-slot write per layer.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from topv.artifact import names as n
from topv.artifact.manifest import Manifest
from topv.runtime.backends.base import Backend, BackendOptions, DecodeStep
from topv.runtime.backends.host_arrays import HostArrays, StepBuffers
from topv.runtime.backends.openvino.setup import compile_options, device_name, graph_model, import_openvino, plan
from topv.runtime.kv import KVCache


class OpenVinoBackend(HostArrays, Backend):
    name = "openvino"
    takes = frozenset({"precision", "weights", "kept_set"})  # not low_memory: the CPU plugin copies each compiled graph's weights

    def __init__(self, manifest: Manifest, compiled: dict[str, Any], plans: dict[str, dict[str, str]]) -> None:
        super().__init__(manifest.kv)
        self.manifest = manifest
        self.compiled = compiled
        self.plans = plans  # graph -> {"precision": ..., "weights": ...}, as compiled
        self.requests = {g: c.create_infer_request() for g, c in compiled.items()}
        self.locks = {g: threading.Lock() for g in compiled}  # Pipeline(max_concurrency > 1) runs graphs from threads
        # an ONNX-read port carries several tensor names (the frontend adds internal ones): use the manifest's
        self.inputs = {g: [_port_name(p, manifest.graphs[g].input_names) for p in c.inputs] for g, c in compiled.items()}
        self.outputs = {g: [_port_name(p, manifest.graphs[g].output_names) for p in c.outputs] for g, c in compiled.items()}

    @classmethod
    def load(cls, folder: Path, manifest: Manifest, options: BackendOptions) -> "OpenVinoBackend":
        ov = import_openvino()
        core = ov.Core()
        device = device_name(core, options.device)
        plans = plan(manifest, options.precision, options.weights, options.kept_set)
        compiled = {}
        for graph, info in manifest.graphs.items():
            model = graph_model(core, Path(folder), manifest, graph, plans[graph]["weights"])
            compiled[graph] = core.compile_model(model, device, compile_options(options, plans[graph]["precision"], device))
        return cls(manifest, compiled, plans)

    def run(self, graph: str, feeds: dict[str, Any], axes: dict[str, int]) -> dict[str, Any]:
        with self.locks[graph]:
            out = self.requests[graph].infer({name: _plain(feeds[name]) for name in self.inputs[graph]},
                                             share_inputs=True, share_outputs=False)  # outputs copied: buffers are reused
            return {name: out[name] for name in self.outputs[graph]}

    def decoder(self, cache: KVCache) -> DecodeStep:
        ov = import_openvino()
        request = self.compiled[n.DECODE_STEP].create_infer_request()  # one request per KV state
        buffers = StepBuffers(self.kv, self.manifest.spec.vocab_size)
        feeds = buffers.inputs(cache)
        for name in self.inputs[n.DECODE_STEP]:
            request.set_tensor(name, ov.Tensor(_plain(feeds[name]), shared_memory=True))
        for name, array in buffers.outputs().items():
            request.set_tensor(name, ov.Tensor(array, shared_memory=True))

        def step(token: int, position: int) -> np.ndarray:
            buffers.set(token, position, cache)
            request.start_async()  # outputs are bound to our arrays: nothing to copy back
            request.wait()
            cache.write_step(buffers.new)
            return buffers.logits[0].copy()

        return step

    def describe(self) -> dict[str, Any]:
        """What each graph was compiled with (device, inference precision, weights), as OpenVINO reports it."""
        out = {}
        for graph, c in self.compiled.items():
            try:
                hint = str(c.get_property("INFERENCE_PRECISION_HINT"))
            except RuntimeError:  # devices without the property
                hint = "n/a"
            out[graph] = {"precision": hint, "weights": self.plans[graph]["weights"] or self.manifest.dtype}
        return out

    def close(self) -> None:
        self.requests.clear()
        self.compiled.clear()


def _plain(array: Any) -> Any:
    """OpenVINO's binding maps numpy dtypes by type character and refuses int64 arrays typed ``q`` (longlong,
    what ONNX Runtime returns on Linux): view them as ``l``."""
    if isinstance(array, np.ndarray) and array.dtype.char in "qQ" and array.dtype.itemsize == 8:
        return array.view(np.int64 if array.dtype.char == "q" else np.uint64)
    return array


def _port_name(port: Any, wanted: list[str]) -> str:
    found = port.get_names() & set(wanted)
    if len(found) != 1:
        from topv.errors import ArtifactError

        raise ArtifactError(f"OpenVINO sees a graph port named {sorted(port.get_names())}, none of them (or several) in "
                            f"manifest.json's {sorted(wanted)}. The folder was edited; re-export the model.")
    return found.pop()
