"""``trt``: the TensorRT engines ``topv-build`` wrote next to the ONNX graphs, on one GPU (TensorRT >= 10 + torch).

* Loading reads ``engines.json`` and refuses engines from another TensorRT version or GPU, engines built
  from other graphs than the folder holds, and damaged engine files; each engine's I/O names and dtypes
  must be the manifest's.
* The static KV cache is the shared :class:`~topv.runtime.kv.KVCache` in device memory, bound to the decode
  engine by address (``set_tensor_address``). The decode step's four small inputs live in one device buffer
  filled by a single host-to-device copy per token; after the engine, each layer's new key/value is written
  into slot ``past_length`` on the device with ``index_copy_`` indexed by that same device-side
  ``past_length`` (no host round trip); the logits come back with one device-to-host copy.
* With ``cuda_graph`` the decode step (engine + slot writes) is captured once per state in a CUDA graph and
  replayed per token (a failed capture falls back to plain launches with a warning).
* Prefill engines get their input shapes per call (``set_input_shape`` within the optimization profile);
  their outputs are torch tensors from the caching allocator; all work runs on one CUDA stream
  (``execute_async_v3``).

Depends only on ``tensorrt`` and ``torch``, so it runs on JetPack's stack. Written against TensorRT's
documented Python API; tested here with a stand-in module (TensorRT cannot be installed on the CI machines).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from topv.artifact import names as n
from topv.artifact.manifest import Manifest
from topv.config import cuda_graph_default
from topv.engines.engine_manifest import REBUILD_HINT, check_compatible, check_matches_export, read_engine_manifest, verify_engine_files
from topv.engines.errors import EngineRunError
from topv.engines.trt_import import import_tensorrt, make_logger
from topv.errors import BackendUnavailableError, ConfigError, IncompatibleArtifactError
from topv.runtime.backends.base import Backend, BackendOptions, DecodeStep
from topv.runtime.kv import KVCache, torch_allocator, torch_dtype

log = logging.getLogger(__name__)

SMALL_STRIDE = 32  # int64 elements between the decode step's small inputs: 256-byte aligned addresses


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(
            "The TensorRT backend keeps its buffers in torch CUDA tensors; install torch with CUDA support (on "
            "Jetson: NVIDIA's torch wheel for your JetPack)."
        ) from exc
    return torch


def _dtype_map(trt: Any, torch: Any) -> dict[Any, Any]:
    pairs = [("FLOAT", torch.float32), ("HALF", torch.float16), ("BF16", torch.bfloat16), ("INT32", torch.int32),
             ("INT64", torch.int64), ("INT8", torch.int8), ("UINT8", torch.uint8), ("BOOL", torch.bool)]
    return {getattr(trt.DataType, name): dtype for name, dtype in pairs if hasattr(trt.DataType, name)}


class _Device:
    """The CUDA device and the one stream everything runs on (or the CPU, for a stand-in tensorrt in tests)."""

    def __init__(self, torch: Any, trt: Any, spec: str | int | None) -> None:
        self.torch = torch
        text = "cuda:0" if spec is None else str(spec).strip().lower()
        if text == "cpu":
            if not getattr(trt, "TOPV_STANDIN", False):
                raise ConfigError("TensorRT runs on CUDA devices; pass device='cuda' or 'cuda:N' for the trt backend.")
            self.is_cuda, self.index, self.device, self.stream, self.handle = False, 0, torch.device("cpu"), None, 0
            return
        if text == "cuda":
            text = "cuda:0"
        if text.isdigit():
            text = f"cuda:{text}"
        if not text.startswith("cuda:") or not text[5:].isdigit():
            raise ConfigError(f"device must be 'cuda', 'cuda:N' or N for the trt backend; got {spec!r}.")
        self.index = int(text[5:])
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "torch sees no CUDA device; the trt backend needs an NVIDIA GPU and torch built with CUDA (on Jetson: "
                "NVIDIA's torch wheel for JetPack)."
            )
        if self.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
        self.is_cuda = True
        self.device = torch.device("cuda", self.index)
        torch.cuda.set_device(self.device)
        self.stream = torch.cuda.Stream(device=self.device)
        self.handle = self.stream.cuda_stream

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Make this device and its stream current (torch kernels, copies and allocations follow them)."""
        if not self.is_cuda:
            yield
            return
        with self.torch.cuda.device(self.device), self.torch.cuda.stream(self.stream):
            yield

    def synchronize(self) -> None:
        if self.is_cuda:
            self.stream.synchronize()

    def to_device(self, value: Any, dtype: Any) -> Any:
        torch = self.torch
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(np.asarray(value))
        return value.to(device=self.device, dtype=dtype).contiguous()

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.empty(shape, dtype=dtype, pin_memory=self.is_cuda)


class _Engine:
    """One deserialized engine, its I/O description and one execution context."""

    def __init__(self, trt: Any, torch: Any, engine: Any, graph: str, dev: _Device) -> None:
        self.trt, self.torch, self.engine, self.graph, self.dev = trt, torch, engine, graph, dev
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        dtypes = _dtype_map(trt, torch)
        self.dtypes = {n: dtypes.get(engine.get_tensor_dtype(n)) for n in names}
        self._context: Any = None

    @property
    def context(self) -> Any:
        """The execution context of the prefill/vision calls (created on first use)."""
        if self._context is None:
            self._context = self.new_context()
        return self._context

    def new_context(self) -> Any:
        context = self.engine.create_execution_context()
        if context is None:
            raise EngineRunError(
                f"TensorRT could not create an execution context for the {self.graph} engine (out of device memory?)."
            )
        return context

    def static_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.engine.get_tensor_shape(name))

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Set shapes and addresses, allocate the outputs, enqueue on the stream (no synchronisation)."""
        context = self.context
        held = []  # converted inputs stay referenced until enqueued; the stream orders any later reuse
        for name in self.inputs:
            tensor = feeds[name]
            if tensor.dtype != self.dtypes[name] or tensor.device != self.dev.device or not tensor.is_contiguous():
                tensor = tensor.to(device=self.dev.device, dtype=self.dtypes[name]).contiguous()
            shape = tuple(int(d) for d in tensor.shape)
            if not context.set_input_shape(name, shape):
                raise EngineRunError(
                    f"the {self.graph} engine refuses input {name!r} of shape {list(shape)}: it is outside the "
                    "engine's optimization profile (see engines.json). Rebuild with a matching export."
                )
            context.set_tensor_address(name, tensor.data_ptr())
            held.append(tensor)
        outputs = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineRunError(
                    f"the {self.graph} engine cannot tell the shape of output {name!r} before running ({list(shape)}); "
                    "topv's graphs have no data-dependent output shapes. Rebuild the engines."
                )
            out = self.torch.empty(shape, dtype=self.dtypes[name], device=self.dev.device)
            context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not context.execute_async_v3(self.dev.handle):
            raise EngineRunError(f"TensorRT failed to enqueue the {self.graph} engine (see the TensorRT log above).")
        return outputs


class _DecodeStep:
    """The decode engine bound once over one cache's buffers, optionally captured in a CUDA graph."""

    def __init__(self, runner: _Engine, cache: KVCache, use_graph: bool) -> None:
        torch, dev = runner.torch, runner.dev
        self.runner, self.cache, self.dev, self.torch = runner, cache, dev, torch
        self.layer = cache.layout.layer
        self.context = runner.new_context()
        self.small = torch.zeros((4, SMALL_STRIDE), dtype=torch.int64, device=dev.device)
        self.staging = dev.host_empty((4, SMALL_STRIDE), torch.int64)
        self.staging.zero_()
        small = {n.INPUT_IDS: self.small[0, :1].view(1, 1), n.POSITION_IDS: self.small[1, :1].view(1, 1),
                 n.PAST_LENGTH_HEAD: self.small[2, :1], n.PAST_LENGTH_TAIL: self.small[3, :1]}
        self.slot_head, self.slot_tail = small[n.PAST_LENGTH_HEAD], small[n.PAST_LENGTH_TAIL]
        bound = {**small, **cache.feeds()}
        for name in runner.inputs:
            tensor = bound.get(name)
            if tensor is None:
                raise IncompatibleArtifactError(f"the decode_step engine has an unexpected input {name!r}. {REBUILD_HINT}")
            if tensor.dtype != runner.dtypes[name]:
                raise IncompatibleArtifactError(
                    f"the decode_step engine takes {name!r} as {runner.dtypes[name]}, the runtime holds {tensor.dtype}. {REBUILD_HINT}"
                )
            if any(d < 0 for d in runner.static_shape(name)) and not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise EngineRunError(f"the decode_step engine refuses {name!r} of shape {list(tensor.shape)}.")
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.outputs = {}
        for name in runner.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            self.outputs[name] = torch.empty(shape, dtype=runner.dtypes[name], device=dev.device)
            self.context.set_tensor_address(name, self.outputs[name].data_ptr())
        self.logits = self.outputs[n.LOGITS]
        self.host_logits = dev.host_empty(tuple(self.logits.shape), self.logits.dtype)
        self.news = [tuple(self.outputs[k] for k in n.kv_names("new", [i])) for i in range(cache.layout.num_layers)]
        self.graph = None
        if use_graph and dev.is_cuda:
            self._capture()

    def _launch(self) -> None:
        if not self.context.execute_async_v3(self.dev.handle):
            raise EngineRunError("TensorRT failed to enqueue the decode_step engine (see the TensorRT log above).")
        for i, (key, value) in enumerate(self.news):
            slot = self.slot_head if i <= self.layer else self.slot_tail
            self.cache.keys[i].index_copy_(2, slot, key)
            self.cache.values[i].index_copy_(2, slot, value)

    def _capture(self) -> None:
        torch = self.torch
        try:
            with self.dev.activate():
                # One plain launch first: TensorRT finishes its lazy set-up outside the capture. It writes
                # slot 0, which every prefill overwrites before it is read.
                self._launch()
                self.dev.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.dev.stream):
                    self._launch()
            self.graph = graph
        except Exception as exc:  # noqa: BLE001 - any capture failure falls back to plain launches
            log.warning("decode step: CUDA graph capture failed (%s); launching the engine per token instead", exc)
            self.graph = None

    def __call__(self, token: int, position: int) -> np.ndarray:
        staging, cache = self.staging, self.cache
        staging[0, 0], staging[1, 0], staging[2, 0], staging[3, 0] = token, position, cache.length_head, cache.length_tail
        if self.dev.is_cuda:  # the prompt's keys/values were copied into the cache on torch's current stream
            self.dev.stream.wait_stream(self.torch.cuda.current_stream(self.dev.device))
        with self.dev.activate():
            self.small.copy_(staging, non_blocking=True)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._launch()
            self.host_logits.copy_(self.logits, non_blocking=True)
            self.dev.synchronize()
        return self.host_logits.numpy()[0].copy()


class TrtBackend(Backend):
    """Runs an export folder's TensorRT engines on one GPU."""

    name = "trt"

    def __init__(self, folder: Path, manifest: Manifest, device: str | int | None, cuda_graph: bool) -> None:
        trt, torch = import_tensorrt(), _import_torch()
        super().__init__(manifest.kv)
        self.trt, self.torch, self.folder, self.manifest = trt, torch, Path(folder), manifest
        self.dev = _Device(torch, trt, device)
        self.cuda_graph = cuda_graph
        from topv.engines import device as devmod

        engines_manifest = read_engine_manifest(folder)
        check_compatible(engines_manifest, tensorrt_version=str(trt.__version__), gpu=devmod.detect_gpu(self.dev.index), folder=folder)
        check_matches_export(engines_manifest, manifest, folder)
        verify_engine_files(folder, engines_manifest)
        self.logger = make_logger(trt)
        self.trt_runtime = trt.Runtime(self.logger)
        self.engines: dict[str, _Engine] = {}
        with self.dev.activate():
            for graph, info in manifest.graphs.items():
                record = engines_manifest.engines[graph]
                engine = self.trt_runtime.deserialize_cuda_engine((self.folder / record.file).read_bytes())
                if engine is None:
                    detail = "; ".join(self.logger.errors[-3:]) or "no detail"
                    raise IncompatibleArtifactError(
                        f"TensorRT {trt.__version__} could not load {record.file} ({detail}). " + REBUILD_HINT.replace("OUT_DIR", str(folder))
                    )
                runner = _Engine(trt, torch, engine, graph, self.dev)
                self._check_io(runner, info, record.file)
                self.engines[graph] = runner
        self._lock = threading.RLock()

    @classmethod
    def load(cls, folder: Path, manifest: Manifest, options: BackendOptions) -> "TrtBackend":
        graph = cuda_graph_default() if options.cuda_graph is None else options.cuda_graph
        return cls(folder, manifest, options.device, graph)

    def _check_io(self, runner: _Engine, info: Any, file: str) -> None:
        want = {t.name: t.dtype for t in info.inputs + info.outputs}
        have = {name: runner.dtypes[name] for name in runner.inputs + runner.outputs}
        problems = []
        if set(want) != set(have):
            problems.append(f"tensors {sorted(set(want) ^ set(have))} differ from the manifest")
        for name in sorted(set(want) & set(have)):
            if have[name] != torch_dtype(want[name]):
                problems.append(f"{name} is {have[name]} in the engine and {want[name]} in the manifest")
        if problems:
            raise IncompatibleArtifactError(f"{file} does not match manifest.json: {'; '.join(problems)}. "
                                            + REBUILD_HINT.replace("OUT_DIR", str(self.folder)))

    def run(self, graph: str, feeds: dict[str, Any], axes: dict[str, int]) -> dict[str, Any]:
        runner = self.engines[graph]
        with self._lock, self.dev.activate():
            outputs = runner.run({name: self.dev.to_device(feeds[name], runner.dtypes[name]) for name in runner.inputs})
            self.dev.synchronize()  # the chain uses the outputs on torch's current stream next
        return outputs

    def asarray(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.dev.device)

    def numpy(self, value: Any) -> np.ndarray:
        with self.dev.activate():
            return value.detach().to("cpu").numpy()

    def new_cache(self) -> KVCache:
        with self._lock, self.dev.activate():
            return KVCache(self.kv, torch_allocator(self.dev.device))

    def decoder(self, cache: KVCache) -> DecodeStep:
        with self._lock, self.dev.activate():
            step = _DecodeStep(self.engines[n.DECODE_STEP], cache, self.cuda_graph)
            self.dev.synchronize()

        def locked(token: int, position: int) -> np.ndarray:
            with self._lock:
                return step(token, position)

        return locked

    def synchronize(self) -> None:
        self.dev.synchronize()

    def input_shapes(self, graph: str) -> dict[str, list[int]]:
        """The engine's declared input shapes (-1: dynamic)."""
        runner = self.engines[graph]
        return {name: list(runner.static_shape(name)) for name in runner.inputs}
