"""ONNX Runtime sessions: the import with an install hint, thread settings, and typed loading errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from topv.config import cpu_threads
from topv.errors import ArtifactError, BackendUnavailableError


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is not installed; install it with `pip install onnxruntime` (CPU) or "
            "`pip install onnxruntime-gpu` (CUDA), or use backend='torch'."
        ) from exc
    return onnxruntime


def session_options(threads: int | None = None, *, low_memory: bool = False, profile: Path | None = None,
                    optimize: bool = True) -> Any:
    """Explicit threads and no spinning: idle ONNX Runtime threads otherwise spin and steal cores. ``low_memory``
    keeps the weights where they are mapped instead of a packed copy per session, and allocates
    activations from one arena shared by every such session. ``profile``: the path prefix of the session's
    per-node trace (ONNX Runtime appends a timestamp and ``.json``). ``optimize=False``: no graph optimizations
    (a float16 graph on the CPU provider, which has no float16 MatMul on x86: optimized, ONNX Runtime folds a
    float32 copy of every weight into the session; unoptimized, each weight is cast when it is used)."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or cpu_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if low_memory:  # no packed weight copies, and one activation arena for all sessions, not one each
        opts.add_session_config_entry("session.disable_prepacking", "1")
        if optimize:
            _shared_arena(ort)
            opts.add_session_config_entry("session.use_env_allocators", "1")
    if not optimize:  # each weight cast just before its MatMul, its float32 copy freed at once, none kept
        opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED  # the default order casts every weight first
        opts.enable_mem_pattern = False
        opts.enable_cpu_mem_arena = False  # an arena would keep (rounded up) the largest cast so far
    if profile is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile)
    opts.log_severity_level = 3
    return opts


def profile_prefix(options: Any, graph: str) -> Path | None:
    """Where ``graph``'s trace goes under ``BackendOptions.profile_dir`` (created), or None without profiling."""
    if options.profile_dir is None:
        return None
    folder = Path(options.profile_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / graph


def end_profiling(sessions: dict[str, Any]) -> dict[str, Path]:
    """Each profiling session's trace file (ONNX Runtime closes it); sessions that do not profile are left out."""
    files = {}
    for graph, session in sessions.items():
        if session.get_session_options().enable_profiling:
            files[graph] = Path(session.end_profiling())
    return files


_ARENA: list[Any] = []


def _shared_arena(ort: Any) -> None:
    """Register one CPU arena in ONNX Runtime's environment (once per process) for sessions that opt in: each
    session's own arena keeps its peak, so five sessions hold five peaks (measured: 90 MiB less at peak)."""
    if not _ARENA:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
        _ARENA.append(info)


def open_session(path: Path, options: Any, providers: list[Any]) -> Any:
    """An ``InferenceSession``; a graph ONNX Runtime refuses (external data outside the folder, a damaged
    file) is an :class:`ArtifactError` that names it."""
    ort = import_onnxruntime()
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped exceptions; re-raised typed
        text = str(exc).splitlines()[0][:400] if str(exc) else type(exc).__name__
        raise ArtifactError(
            f"ONNX Runtime cannot load {path.name} ({text}). The graph is damaged or refers to data outside the "
            "export folder (re-export the model), or the execution provider refused its options here."
        ) from None


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(bool)": "bool", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


def check_session_io(session: Any, info: Any) -> None:
    """The graph ONNX Runtime loaded has the inputs and outputs manifest.json declares (names, dtypes, fixed sizes).

    Raises:
        ArtifactError: they differ (the manifest or the graph was edited).
    """
    problems = []
    for kind, got, want in (("input", session.get_inputs(), info.inputs), ("output", session.get_outputs(), info.outputs)):
        have = {v.name: v for v in got}
        for t in want:
            v = have.get(t.name)
            if v is None:
                problems.append(f"{kind} {t.name} is missing")
                continue
            dims = [d if isinstance(d, int) else None for d in v.shape]
            fixed = [d if isinstance(d, int) else None for d in t.shape]
            if _ORT_TYPES.get(v.type) != t.dtype or len(dims) != len(fixed) or any(
                    a is not None and b is not None and a != b for a, b in zip(dims, fixed)):
                problems.append(f"{kind} {t.name} is {v.type} {v.shape} in the graph, {t.dtype} {list(t.shape)} in the manifest")
    if problems:
        raise ArtifactError(f"{info.file} does not match manifest.json: " + "; ".join(problems[:3])
                            + ". The folder was edited; re-export the model.")


class SharedWeights:
    """Every externally stored weight of an export as a read-only view of one memory map per data file, handed to
    each session as an initializer (``SessionOptions.add_initializer``): the decoder weights that a prefill graph
    and the decode step both use are then the same pages, mapped once, instead of one mapping (and, with
    prepacking, one packed copy) per session. Needs the ``onnx`` package to read the graphs' initializer table.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.maps: dict[Path, Any] = {}
        self.values: list[Any] = []  # OrtValues must outlive the sessions that use them

    def add_to(self, options: Any, graph_path: Path) -> None:
        import numpy as np

        from topv.artifact.external import external_tensors

        ort = import_onnxruntime()
        for t in external_tensors(self.folder, graph_path):
            if t.path not in self.maps:
                self.maps[t.path] = np.memmap(t.path, dtype=np.uint8, mode="r")
            array = self.maps[t.path][t.offset:t.offset + t.length].view(t.dtype).reshape(t.shape)
            self.values.append(ort.OrtValue.ortvalue_from_numpy(array))
            options.add_initializer(t.name, self.values[-1])

    def close(self) -> None:
        self.values.clear()
        self.maps.clear()
