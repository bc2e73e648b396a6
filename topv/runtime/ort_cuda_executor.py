"""The ``ort-cuda`` backend: ONNX Runtime's CUDA provider with every tensor resident on the device.

* The static KV cache is one torch tensor per layer and kind, allocated once on the device; graphs read
  it through IOBinding by address, and each decode step's new key/value is written into its slot with a
  device copy on the same stream ONNX Runtime runs on (``user_compute_stream``): no host round trip per
  token except the logits the sampler reads.
* Prefill outputs are bound to device tensors of the exact shapes the manifest implies, so image features,
  hidden states and kept indices never visit the host.
* ``cuda_graph=True`` lets ONNX Runtime capture the decode step once and replay it (all of its inputs and
  outputs live at fixed device addresses; the small inputs are updated in place).

The same class runs with ``device="cpu"`` and the CPU provider; the tests use that to exercise the
binding and buffer logic on machines without a GPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from topv.errors import BackendUnavailableError
from topv.runtime.kv import KVLayout
from topv.runtime.ort_executor import default_threads, import_onnxruntime, session_options

_TORCH_DTYPES = {"float32": "float32", "float16": "float16", "int64": "int64"}


class OrtDeviceExecutor:
    """ONNX Runtime with IOBinding over torch device tensors (CUDA, or CPU for testing)."""

    def __init__(self, folder: Path, manifest: dict[str, Any], *, threads: int | None = None, device: str | None = None,
                 cuda_graph: bool = False) -> None:
        ort = import_onnxruntime()
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError("The ort-cuda backend keeps its buffers in torch CUDA tensors: pip install torch.") from exc
        self.torch = torch
        self.device = torch.device(device or "cuda")
        self.manifest = manifest
        self.layout = KVLayout.from_manifest(manifest)
        self.spec = manifest["model"]["spec"]
        self.kv_dtype = getattr(torch, _TORCH_DTYPES[self.layout.dtype])
        self.float_dtype = self.kv_dtype
        if hasattr(ort, "preload_dlls") and self.device.type == "cuda":
            ort.preload_dlls()
        opts = session_options(threads or default_threads())
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "ONNX Runtime here has no CUDAExecutionProvider; install onnxruntime-gpu matching your CUDA "
                    "(see docs/gpu.md), or use backend='ort-cpu'."
                )
            if not torch.cuda.is_available():
                raise BackendUnavailableError("torch sees no CUDA device; the ort-cuda backend needs an NVIDIA GPU.")
            self.stream = torch.cuda.current_stream(self.device)
            index = self.device.index or 0
            base = {"device_id": str(index), "user_compute_stream": str(self.stream.cuda_stream)}
            providers = lambda graph: [("CUDAExecutionProvider", {**base, **({"enable_cuda_graph": "1"} if graph else {})})]  # noqa: E731
            self.ort_device = ("cuda", index)
        else:
            self.stream = None
            providers = lambda graph: ["CPUExecutionProvider"]  # noqa: E731
            self.ort_device = ("cpu", 0)
        self.cuda_graph = bool(cuda_graph and self.device.type == "cuda")
        self.sessions = {}
        for name, entry in manifest["graphs"].items():
            use_graph = self.cuda_graph and name == "decode_step"
            self.sessions[name] = ort.InferenceSession(str(folder / entry["file"]), sess_options=opts, providers=providers(use_graph))
        self.has_prune = "prune" in self.sessions
        self._dtypes = {
            name: {t["name"]: t["dtype"] for t in entry["inputs"] + entry["outputs"]} for name, entry in manifest["graphs"].items()
        }

    # ------------------------------------------------------------------ binding helpers
    def _empty(self, shape: tuple[int, ...], dtype_name: str) -> Any:
        return self.torch.empty(shape, dtype=getattr(self.torch, _TORCH_DTYPES[dtype_name]), device=self.device)

    def _bind(self, binding: Any, graph: str, name: str, tensor: Any, output: bool = False) -> None:
        if not tensor.is_contiguous():
            raise ValueError(f"{graph}/{name} must be bound to a contiguous tensor")
        kind, index = self.ort_device
        np_dtype = np.dtype(self._dtypes[graph][name])
        fn = binding.bind_output if output else binding.bind_input
        fn(name, kind, index, np_dtype, list(tensor.shape), tensor.data_ptr())

    def _run(self, graph: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        session = self.sessions[graph]
        binding = session.io_binding()
        for name, tensor in inputs.items():
            self._bind(binding, graph, name, tensor)
        for name, tensor in outputs.items():
            self._bind(binding, graph, name, tensor, output=True)
        session.run_with_iobinding(binding)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ executor interface
    def new_state(self) -> dict[str, Any]:
        """KV buffers and the decode step's bound tensors, allocated once per concurrent generation."""
        layout = self.layout
        t = self.torch
        keys = [t.zeros(layout.shape(i), dtype=self.kv_dtype, device=self.device) for i in range(layout.num_layers)]
        values = [t.zeros(layout.shape(i), dtype=self.kv_dtype, device=self.device) for i in range(layout.num_layers)]
        small = {n: t.zeros(s, dtype=t.int64, device=self.device) for n, s in
                 (("input_ids", (1, 1)), ("position_ids", (1, 1)), ("past_length_head", (1,)), ("past_length_tail", (1,)))}
        logits = t.zeros((1, self.spec["vocab_size"]), dtype=t.float32, device=self.device)
        new = [t.zeros((1, layout.num_kv_heads, 1, layout.head_dim), dtype=self.kv_dtype, device=self.device)
               for _ in range(2 * layout.num_layers)]
        session = self.sessions["decode_step"]
        binding = session.io_binding()
        past_names = [i.name for i in session.get_inputs()][4:]
        buffers = [b for pair in zip(keys, values) for b in pair]
        for name, tensor in list(small.items()) + list(zip(past_names, buffers)):
            self._bind(binding, "decode_step", name, tensor)
        out_names = [o.name for o in session.get_outputs()]
        for name, tensor in zip(out_names, [logits, *new]):
            self._bind(binding, "decode_step", name, tensor, output=True)
        return {"keys": keys, "values": values, "small": small, "logits": logits, "new": new, "binding": binding,
                "length_head": 0, "length_tail": 0}

    def vision(self, pixel_values: np.ndarray) -> Any:
        dtype = self._dtypes["vision"]["pixel_values"]
        pixels = self.torch.from_numpy(pixel_values.astype(dtype, copy=False)).to(self.device)
        features = self._empty((1, self.spec["num_visual_tokens"], self._hidden_size()), self._dtypes["vision"]["image_features"])
        self._run("vision", {"pixel_values": pixels}, {"image_features": features})
        return features

    def _hidden_size(self) -> int:
        return int(self.manifest["model"]["config"]["text_config"]["hidden_size"])

    def prefill(self, state: dict[str, Any], input_ids: np.ndarray, features: Any) -> dict[str, Any]:
        layout, spec, t = self.layout, self.spec, self.torch
        layer = layout.layer
        seq = int(input_ids.shape[1])
        d = self._hidden_size()
        ids = t.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self.device)
        timings = {}
        t0 = self._now()
        hidden = self._empty((1, seq, d), self._dtypes["prefill_head"]["hidden_states"])
        n_grid = spec["grid_hw"][0] * spec["grid_hw"][1]
        source = self._empty((1, n_grid, d), self._dtypes["prefill_head"]["prune_source"])
        target = self._empty((1, n_grid, d), self._dtypes["prefill_head"]["prune_target"])
        presents = {}
        for i in range(layer + 1):
            for kind in ("key", "value"):
                presents[f"present_{kind}.{i}"] = self._empty((1, layout.num_kv_heads, seq, layout.head_dim), layout.dtype)
        self._run("prefill_head", {"input_ids": ids, "image_features": features},
                  {"hidden_states": hidden, "prune_source": source, "prune_target": target, **presents})
        for i in range(layer + 1):
            state["keys"][i][:, :, :seq].copy_(presents[f"present_key.{i}"])
            state["values"][i][:, :, :seq].copy_(presents[f"present_value.{i}"])
        timings["prefill_head"] = self._now() - t0
        t0 = self._now()
        kept = None
        if self.has_prune:
            k = self.manifest["pruning"]["kept_visual_tokens"]
            kept_seq = seq - spec["num_visual_tokens"] + k
            kept = self._empty((1, k), "int64")
            kept_hidden = self._empty((1, kept_seq, d), self._dtypes["prune"]["kept_hidden_states"])
            positions = self._empty((1, kept_seq), "int64")
            self._run("prune", {"hidden_states": hidden, "prune_source": source, "prune_target": target, "input_ids": ids},
                      {"kept_indices": kept, "kept_hidden_states": kept_hidden, "kept_position_ids": positions})
            hidden = kept_hidden
        else:
            kept_seq = seq
            positions = t.arange(seq, device=self.device, dtype=t.int64).unsqueeze(0)
        timings["prune"] = self._now() - t0
        t0 = self._now()
        logits = self._empty((1, spec["vocab_size"]), "float32")
        tail_presents = {}
        for i in range(layer + 1, layout.num_layers):
            for kind in ("key", "value"):
                tail_presents[f"present_{kind}.{i}"] = self._empty((1, layout.num_kv_heads, kept_seq, layout.head_dim), layout.dtype)
        self._run("prefill_tail", {"hidden_states": hidden, "position_ids": positions}, {"logits": logits, **tail_presents})
        for i in range(layer + 1, layout.num_layers):
            state["keys"][i][:, :, :kept_seq].copy_(tail_presents[f"present_key.{i}"])
            state["values"][i][:, :, :kept_seq].copy_(tail_presents[f"present_value.{i}"])
        timings["prefill_tail"] = self._now() - t0
        state["length_head"], state["length_tail"] = seq, kept_seq
        return {
            "logits": logits[0].cpu().numpy(),
            "kept_indices": None if kept is None else kept[0].cpu().tolist(),
            "kept_length": kept_seq,
            "timings": timings,
        }

    def decode(self, state: dict[str, Any], token: int, position: int) -> np.ndarray:
        small = state["small"]
        lh, lt = state["length_head"], state["length_tail"]
        if lh >= self.layout.capacity_head or lt >= self.layout.capacity_tail:
            from topv.errors import InternalError

            raise InternalError("the static KV cache is full")
        small["input_ids"].fill_(token)
        small["position_ids"].fill_(position)
        small["past_length_head"].fill_(lh)
        small["past_length_tail"].fill_(lt)
        self.sessions["decode_step"].run_with_iobinding(state["binding"])
        new = state["new"]
        for i in range(self.layout.num_layers):
            slot = lh if i <= self.layout.layer else lt
            state["keys"][i][:, :, slot].copy_(new[2 * i][:, :, 0])
            state["values"][i][:, :, slot].copy_(new[2 * i + 1][:, :, 0])
        state["length_head"], state["length_tail"] = lh + 1, lt + 1
        return state["logits"][0].cpu().numpy()

    def _now(self) -> float:
        self._sync()
        return time.perf_counter()


class OrtCudaExecutor(OrtDeviceExecutor):
    """``ort-cuda``: :class:`OrtDeviceExecutor` on ``cuda`` (default ``cuda:0``).

    The decode step is captured as a CUDA graph when ``TOPV_ORT_CUDA_GRAPH=1`` (off by default until it
    has been verified on a GPU; see docs/benchmarks.md).
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], *, threads: int | None = None, device: str | None = None) -> None:
        from topv.config import ort_cuda_graph

        super().__init__(folder, manifest, threads=threads, device=device or "cuda:0", cuda_graph=ort_cuda_graph())
