"""``ort-cuda``: ONNX Runtime's CUDA provider with every tensor resident on the device (torch tensors).

* Graph inputs and outputs are bound by address with IOBinding; outputs are preallocated with the shapes
  the manifest declares (symbolic axes resolved per request), so image features, hidden states and kept
  indices never visit the host.
* The static KV cache is one torch tensor per layer and kind, allocated once per state; each decode
  step's new key/value is written into its slot with a device copy on the stream ONNX Runtime runs on
  (``user_compute_stream``): no host round trip per token except the logits the sampler reads.
* ``cuda_graph`` lets ONNX Runtime capture the decode step once and replay it (all of its inputs and
  outputs live at fixed device addresses; the small inputs are updated in place).

With ``device="cpu"`` the same class runs on the CPU provider; the tests use that to exercise the
binding and buffer logic on machines without a GPU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from topv.artifact import names as n
from topv.artifact.manifest import Manifest
from topv.config import cuda_graph_default
from topv.errors import BackendUnavailableError
from topv.runtime.backends.torch_arrays import TorchArrays
from topv.runtime.backends.base import Backend, BackendOptions, DecodeStep
from topv.runtime.backends.ort.session import (
    check_session_io,
    end_profiling,
    import_onnxruntime,
    open_session,
    profile_prefix,
    session_options,
)
from topv.runtime.kv import KVCache, torch_allocator, torch_dtype


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError("The ort-cuda backend keeps its buffers in torch CUDA tensors: pip install torch.") from exc
    return torch


class OrtCudaBackend(TorchArrays, Backend):
    name = "ort-cuda"
    takes = frozenset({"profile_dir"})

    def __init__(self, manifest: Manifest, sessions: dict[str, Any], device: Any, stream: Any, cuda_graph: bool) -> None:
        super().__init__(manifest.kv)
        self.torch = _import_torch()
        self.manifest, self.sessions, self.device, self.stream = manifest, sessions, device, stream
        self.cuda_graph = cuda_graph
        self.ort_device = ("cuda", device.index or 0) if device.type == "cuda" else ("cpu", 0)
        self.bound_decoders = 0

    @classmethod
    def load(cls, folder: Path, manifest: Manifest, options: BackendOptions) -> "OrtCudaBackend":
        ort, torch = import_onnxruntime(), _import_torch()
        from topv.config import check_device

        device = torch.device(check_device(options.device, default="cuda:0"))
        def opts(graph: str) -> Any:
            return session_options(options.threads, profile=profile_prefix(options, graph))

        if device.type != "cuda":
            sessions = {g: open_session(Path(folder) / i.file, opts(g), ["CPUExecutionProvider"]) for g, i in manifest.graphs.items()}
            return cls(manifest, sessions, device, None, False)._check()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(
                "ONNX Runtime here has no CUDAExecutionProvider; install onnxruntime-gpu matching your CUDA "
                "(see docs/gpu.md), or use backend='ort-cpu'."
            )
        if not torch.cuda.is_available():
            raise BackendUnavailableError("torch sees no CUDA device; the ort-cuda backend needs an NVIDIA GPU.")
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        stream = torch.cuda.Stream(device)  # ONNX Runtime's compute stream; CUDA graphs cannot capture the legacy one
        graph = cuda_graph_default() if options.cuda_graph is None else options.cuda_graph
        # use_tf32=0: the provider's default runs float32 MatMuls in TF32 (10-bit mantissa); the float32 islands of
        # an fp16 export (the TopV cost and Sinkhorn, rotary angles) and every fp32 export need full float32
        base = {"device_id": str(device.index or 0), "user_compute_stream": str(stream.cuda_stream), "use_tf32": "0"}
        sessions = {}
        for name, info in manifest.graphs.items():
            capture = {"enable_cuda_graph": "1"} if graph and name == n.DECODE_STEP else {}
            sessions[name] = open_session(Path(folder) / info.file, opts(name), [("CUDAExecutionProvider", {**base, **capture})])
            if sessions[name].get_providers()[:1] != ["CUDAExecutionProvider"]:
                raise BackendUnavailableError(  # ONNX Runtime falls back to the CPU provider with only a log line
                    f"ONNX Runtime could not start its CUDA provider for {info.file} (it offered "
                    f"{sessions[name].get_providers()}): CUDA 13 / cuDNN 9 libraries or the driver were not found. "
                    "Import torch before onnxruntime so its CUDA libraries are loaded, or see docs/gpu.md.")
        return cls(manifest, sessions, device, stream, graph)._check()

    def end_profiling(self) -> dict[str, Path]:
        return end_profiling(self.sessions)

    def close(self) -> None:
        """Drop the sessions (ONNX Runtime frees their device arenas) and return torch's cached blocks."""
        self.sessions.clear()
        from topv.memory import release_device_memory

        release_device_memory(self.device.type == "cuda")

    def _check(self) -> "OrtCudaBackend":
        for g, info in self.manifest.graphs.items():
            check_session_io(self.sessions[g], info)
        return self

    def _bind(self, binding: Any, graph: str, name: str, tensor: Any, output: bool = False) -> None:
        dtype = np.dtype(self.manifest.graphs[graph].tensor(name).dtype)
        fn = binding.bind_output if output else binding.bind_input
        fn(name, *self.ort_device, dtype, list(tensor.shape), tensor.contiguous().data_ptr())

    def _on_stream(self) -> Any:
        """Torch work of this backend runs on ONNX Runtime's stream, after what the current stream has queued."""
        if self.stream is None:
            return contextlib.nullcontext()
        self.stream.wait_stream(self.torch.cuda.current_stream(self.device))
        return self.torch.cuda.stream(self.stream)

    def run(self, graph: str, feeds: dict[str, Any], axes: dict[str, int]) -> dict[str, Any]:
        info, session = self.manifest.graphs[graph], self.sessions[graph]
        with self._on_stream():
            outputs = {t.name: self.torch.empty(t.resolve(axes), dtype=torch_dtype(t.dtype), device=self.device) for t in info.outputs}
            binding = session.io_binding()
            held = {name: feeds[name].to(device=self.device, dtype=torch_dtype(info.tensor(name).dtype)).contiguous()
                    for name in info.input_names}
            for name, tensor in held.items():
                self._bind(binding, graph, name, tensor)
            for name, tensor in outputs.items():
                self._bind(binding, graph, name, tensor, output=True)
            session.run_with_iobinding(binding)
        if self.stream is not None:
            self.stream.synchronize()  # the chain uses the outputs on torch's current stream next
        return outputs

    def decoder(self, cache: KVCache) -> DecodeStep:
        if self.cuda_graph and self.bound_decoders:
            from topv.errors import ConfigError

            raise ConfigError("cuda_graph captures the decode step once, at the buffers of one KV state; a second state "
                              "would replay the first one's addresses. Use max_concurrency=1 with cuda_graph, or turn "
                              "cuda_graph off.")
        self.bound_decoders += 1
        t, kv = self.torch, self.kv
        small = {name: t.zeros((1, 1) if name in (n.INPUT_IDS, n.POSITION_IDS) else (1,), dtype=t.int64, device=self.device)
                 for name in (n.INPUT_IDS, n.POSITION_IDS, n.PAST_LENGTH_HEAD, n.PAST_LENGTH_TAIL)}
        logits = t.zeros(self.manifest.graphs[n.DECODE_STEP].tensor(n.LOGITS).resolve({}), dtype=t.float32, device=self.device)
        new = {name: t.zeros((1, kv.num_kv_heads, 1, kv.head_dim), dtype=torch_dtype(kv.dtype), device=self.device)
               for name in n.kv_names("new", range(kv.num_layers))}
        session = self.sessions[n.DECODE_STEP]
        binding = session.io_binding()
        feeds = {**small, **cache.feeds()}
        for name in self.manifest.graphs[n.DECODE_STEP].input_names:  # the inputs the graph uses
            self._bind(binding, n.DECODE_STEP, name, feeds[name])
        for name, tensor in {n.LOGITS: logits, **new}.items():
            self._bind(binding, n.DECODE_STEP, name, tensor, output=True)

        def step(token: int, position: int) -> np.ndarray:
            with self._on_stream():
                small[n.INPUT_IDS].fill_(token)
                small[n.POSITION_IDS].fill_(position)
                small[n.PAST_LENGTH_HEAD].fill_(cache.length_head)
                small[n.PAST_LENGTH_TAIL].fill_(cache.length_tail)
                session.run_with_iobinding(binding)
                cache.write_step(new)
                return logits[0].cpu().numpy()

        return step
