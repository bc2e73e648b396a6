"""A stand-in for the ``tensorrt`` module, for tests on machines without TensorRT or a GPU.

It implements the part of the TensorRT 10 Python API that ``topv.engines`` calls (builder, network,
ONNX parser, builder config, optimization profiles, timing cache, runtime, engine, execution context with
tensor addresses) and executes "engines" with ONNX Runtime on the CPU, reading and writing the bound
buffers through their raw addresses. Passing tests with it says that topv's orchestration (profiles,
bindings, KV slot writes, file handling) is right; it says nothing about the real TensorRT.
"""

from __future__ import annotations

import ctypes
import enum
import json
from pathlib import Path

import numpy as np

__version__ = "10.99.0+standin"
TOPV_STANDIN = True  # lets the trt backend run on device="cpu"

BUILDS: list[dict] = []  # one record per build_serialized_network call, for assertions
FAIL_BUILD: set[str] = set()  # ONNX file names whose build "runs out of memory"


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 5


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class BuilderFlag(enum.Enum):
    FP16 = 0
    BF16 = 1
    TF32 = 2


class ErrorCode(enum.Enum):
    SUCCESS = 0
    UNSUPPORTED_NODE = 8


_ORT_TYPES = {
    "tensor(float)": DataType.FLOAT, "tensor(float16)": DataType.HALF, "tensor(int64)": DataType.INT64,
    "tensor(int32)": DataType.INT32, "tensor(bool)": DataType.BOOL, "tensor(uint8)": DataType.UINT8,
    "tensor(int8)": DataType.INT8,
}
_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT64: np.int64, DataType.INT32: np.int32,
       DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT8: np.int8}
_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 7: DataType.INT64, 6: DataType.INT32, 9: DataType.BOOL,
               2: DataType.UINT8, 3: DataType.INT8, 11: DataType.FLOAT}  # DOUBLE -> FLOAT, like the parser


class ILogger:
    class Severity(enum.Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass

    def log(self, severity, msg) -> None:  # pragma: no cover - overridden
        pass


class _Tensor:
    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, tuple(shape), dtype
        self.is_shape_tensor = False


class _Network:
    def __init__(self, flags):
        self.flags = flags
        self.inputs: list[_Tensor] = []
        self.onnx_path = None

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class _ParserError:
    def __init__(self, node, name, op, desc):
        self._node, self._name, self._op, self._desc = node, name, op, desc

    def code(self):
        return ErrorCode.UNSUPPORTED_NODE

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op


class OnnxParser:
    def __init__(self, network, logger):
        self.network, self.logger, self.errors = network, logger, []

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]

    def parse_from_file(self, path):
        import onnx

        model = onnx.load(path, load_external_data=False)
        for i, node in enumerate(model.graph.node):
            if node.domain not in ("", "ai.onnx"):
                self.errors.append(_ParserError(i, node.name, node.op_type, f"No importer registered for op: {node.op_type}"))
        if self.errors:
            return False
        inits = {t.name for t in model.graph.initializer}
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
            self.network.inputs.append(_Tensor(vi.name, dims, _ONNX_TYPES[vi.type.tensor_type.elem_type]))
        self.network.onnx_path = str(path)
        return True


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's parameter names
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class _TimingCache:
    def __init__(self, data):
        if data and not bytes(data).startswith(b"standin-cache"):
            raise RuntimeError("not a timing cache")
        self.entries = int(bytes(data).split(b":")[1]) if data else 0

    def serialize(self):
        return f"standin-cache:{self.entries}".encode()


class _Config:
    def __init__(self):
        self.flags, self.cleared, self.pools, self.profiles = set(), set(), {}, []
        self.builder_optimization_level = 3
        self.timing_cache = None

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.cleared.add(flag)

    def create_timing_cache(self, data):
        return _TimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return True

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Builder:
    def __init__(self, logger):
        self.logger = logger

    def create_network(self, flags=0):
        return _Network(flags)

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        strongly_typed = bool(network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
        name = Path(network.onnx_path).name
        if strongly_typed and config.flags & {BuilderFlag.FP16, BuilderFlag.BF16}:
            self.logger.log(ILogger.Severity.ERROR, "precision flags are not allowed on a strongly typed network")
            return None
        if name in FAIL_BUILD:
            self.logger.log(ILogger.Severity.ERROR, "Requested amount of GPU memory could not be allocated")
            return None
        profile = config.profiles[0].shapes if config.profiles else {}
        for tensor in network.inputs:
            if -1 in tensor.shape and tensor.name not in profile:
                self.logger.log(ILogger.Severity.ERROR, f"input {tensor.name} is dynamic and has no profile")
                return None
        if config.timing_cache is not None:
            config.timing_cache.entries += 1
        record = {
            "onnx": network.onnx_path, "profile": {k: [list(s) for s in v] for k, v in profile.items()},
            "strongly_typed": strongly_typed, "flags": sorted(f.name for f in config.flags),
            "cleared": sorted(f.name for f in config.cleared), "pools": {p.name: v for p, v in config.pools.items()},
            "opt_level": config.builder_optimization_level,
        }
        BUILDS.append(record)
        return json.dumps(record).encode()


class Runtime:
    def __init__(self, logger):
        self.logger = logger

    def deserialize_cuda_engine(self, data):
        try:
            record = json.loads(bytes(data))
        except ValueError:
            self.logger.log(ILogger.Severity.ERROR, "Serialization assertion failed: magic tag mismatch")
            return None
        return ICudaEngine(record)


class ICudaEngine:
    def __init__(self, record):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(record["onnx"], sess_options=opts, providers=["CPUExecutionProvider"])
        self.profile = {k: tuple(tuple(s) for s in v) for k, v in record["profile"].items()}
        self.io = [(i.name, TensorIOMode.INPUT, i) for i in self.session.get_inputs()]
        self.io += [(o.name, TensorIOMode.OUTPUT, o) for o in self.session.get_outputs()]
        self.by_name = {name: (mode, arg) for name, mode, arg in self.io}

    @property
    def num_io_tensors(self):
        return len(self.io)

    def get_tensor_name(self, i):
        return self.io[i][0]

    def get_tensor_mode(self, name):
        return self.by_name[name][0]

    def get_tensor_dtype(self, name):
        return _ORT_TYPES[self.by_name[name][1].type]

    def get_tensor_shape(self, name):
        return tuple(d if isinstance(d, int) else -1 for d in self.by_name[name][1].shape)

    def is_shape_inference_io(self, name):
        return False

    def create_execution_context(self):
        return IExecutionContext(self)


def _read(ptr, shape, dtype):
    n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * max(n, 1)).from_address(ptr))[:n]
    return raw.view(dtype).reshape(shape).copy()


class IExecutionContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses = engine, {}, {}
        self.launches = 0

    def set_input_shape(self, name, shape):
        shape = tuple(int(d) for d in shape)
        static = self.engine.get_tensor_shape(name)
        if len(shape) != len(static) or any(s != -1 and s != d for s, d in zip(static, shape)):
            return False
        if name in self.engine.profile:
            lo, _, hi = self.engine.profile[name]
            if not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
                return False
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def _inputs(self):
        feeds = {}
        for name, mode, arg in self.engine.io:
            if mode is TensorIOMode.INPUT:
                shape = self.shapes.get(name) or self.engine.get_tensor_shape(name)
                feeds[name] = _read(self.addresses[name], shape, _NP[self.engine.get_tensor_dtype(name)])
        return feeds

    def _run(self):
        names = [o.name for o in self.engine.session.get_outputs()]
        return dict(zip(names, self.engine.session.run(names, self._inputs())))

    def get_tensor_shape(self, name):
        mode = self.engine.get_tensor_mode(name)
        if mode is TensorIOMode.INPUT:
            return self.shapes.get(name, self.engine.get_tensor_shape(name))
        static = self.engine.get_tensor_shape(name)
        if -1 not in static:
            return static
        return tuple(self._run()[name].shape)  # the stand-in's "shape inference"

    def execute_async_v3(self, stream_handle):
        self.launches += 1
        for name, value in self._run().items():
            value = np.ascontiguousarray(value)
            ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
        return True
