"""``Pipeline``: prompt and image in, tokens out, on any backend (ONNX Runtime CPU/CUDA, TensorRT, PyTorch).

    pipe = Pipeline.load("out/llava-topv", backend="ort-cpu")
    result = pipe.generate("scene.png", "What colour is the square?", max_new_tokens=16)
    for piece in pipe.generate("scene.png", "Describe it.", stream=True):
        print(piece, end="", flush=True)

The prompt goes through the exported folder's own processor (its family's chat template and image-token
expansion), the graphs through :class:`~topv.runtime.chain.GraphChain` on the chosen backend; token
choice is ``topv.sampling``, shared with the PyTorch reference, so a backend that reproduces the
reference's logits reproduces its tokens.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from topv.artifact.manifest import Manifest, read_manifest, verify_folder
from topv.errors import ArtifactError, BusyError, ConfigError, InputError, PromptTooLongError
from topv.families import Processor, get_family
from topv.inputs import image_span
from topv.runtime.backends import backend_class
from topv.runtime.backends.base import Backend, BackendOptions
from topv.runtime.chain import ChainState, GraphChain
from topv.sampling import SamplingConfig, TokenSampler, check_max_new_tokens, stop_ids


@dataclass
class RunResult:
    """One generation.

    Attributes:
        text: the answer (special tokens removed).
        token_ids: the new tokens; a stop token, when reached, is the last one.
        kept_indices: kept positions within the visual tokens, or None without pruning.
        timings: seconds per stage: ``preprocess``, ``vision``, ``prefill_head``, ``prune``, ``prefill_tail``,
            ``decode`` (a list, one per step), ``ttft`` (``generate`` called -> first token chosen, preprocessing
            included) and ``total``.
        prompt_length / kept_length: prompt tokens before pruning / held by layers after K.
    """

    text: str
    token_ids: list[int]
    kept_indices: list[int] | None
    timings: dict[str, Any] = field(default_factory=dict)
    prompt_length: int = 0
    kept_length: int = 0

    def timings_ms(self) -> dict[str, Any]:
        return {k: [round(x * 1e3, 3) for x in v] if isinstance(v, list) else round(v * 1e3, 3) for k, v in self.timings.items()}

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "token_ids": self.token_ids, "kept_indices": self.kept_indices,
                "timings_ms": self.timings_ms(), "prompt_length": self.prompt_length, "kept_length": self.kept_length}


class TextStream:
    """Iterator over text pieces of a streaming generation; ``.result`` is set when it is exhausted.

    Closing it (or dropping the last reference to it) ends the generation and gives its KV state back.
    """

    def __init__(self, pieces: Iterator[str | RunResult], lease: "_Lease") -> None:
        self._pieces = pieces
        self._lease = lease
        self.result: RunResult | None = None

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        while True:
            item = next(self._pieces)
            if isinstance(item, RunResult):
                self.result = item
                continue
            return item

    def close(self) -> None:
        """End the generation early and give its KV state back (also when it was never started)."""
        self._pieces.close()
        self._lease.release()

    def __del__(self) -> None:
        self.close()


class _Lease:
    """One KV state taken from a pipeline's pool; :meth:`release` gives it back exactly once."""

    def __init__(self, pipeline: "Pipeline", state: ChainState) -> None:
        self.pipeline, self.state, self.thread, self.done = pipeline, state, threading.get_ident(), False
        with pipeline._lock:
            pipeline._holders[self.thread] = pipeline._holders.get(self.thread, 0) + 1

    def release(self) -> None:
        pipeline = self.pipeline
        with pipeline._lock:
            if self.done:
                return
            self.done = True
            pipeline._holders[self.thread] -= 1
        pipeline._states.put(self.state)


class _Incremental:
    """Turns growing token lists into appended text, holding back incomplete characters."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.text = ""

    def push(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(self.text):
            return ""
        piece, self.text = text[len(self.text):], text
        return piece


class Pipeline:
    """A loaded export folder, ready to generate. Create with :meth:`load`.

    Thread-safe: each generation takes one of ``max_concurrency`` preallocated KV states (default 1, so
    concurrent calls from several threads run one after another and give the tokens they would give alone).
    """

    def __init__(self, folder: Path, manifest: Manifest, backend: Backend, processor: Processor,
                 max_concurrency: int = 1, wait_seconds: float = 300.0) -> None:
        self.folder, self.manifest, self.backend, self.processor = folder, manifest, backend, processor
        self.chain = GraphChain.for_manifest(backend, manifest)
        self.stop_ids = stop_ids(manifest.eos_token_ids)
        self.wait_seconds = wait_seconds
        self._states: queue.Queue[ChainState] = queue.Queue()
        self._lock = threading.Lock()
        self._holders: dict[int, int] = {}  # thread id -> KV states it holds
        for _ in range(max_concurrency):
            self._states.put(self.chain.new_state())
        self.max_concurrency = max_concurrency

    @classmethod
    def load(cls, folder: str | Path, backend: str = "ort-cpu", *, threads: int | None = None, device: str | None = None,
             verify_checksums: bool | str = "stamp", max_concurrency: int = 1, model_dir: str | Path | None = None,
             cuda_graph: bool | None = None, wait_seconds: float = 300.0, precision: str | None = None,
             weights: str | None = None, low_memory: bool = False, profile_dir: str | Path | None = None,
             kept_set: str = "float32") -> "Pipeline":
        """Open an export folder: check the manifest and files, open the backend, allocate the KV states.

        Args:
            backend: ``ort-cpu``, ``ort-cuda``, ``trt``, ``torch`` or ``openvino``.
            threads: CPU threads (ONNX Runtime intra-op / torch); default all available cores.
            device: ``cuda:0`` style device for GPU backends (and ``torch``); an OpenVINO device name (``CPU``,
                ``GPU``, ``NPU``) for ``openvino``.
            verify_checksums: ``"stamp"`` (default): SHA-256 of every file, skipped when a stamp in the user's cache
                shows this folder was hashed in full and no file changed size, mtime or inode since; ``True``:
                always hash; ``False``: sizes only (file listing and confinement are always checked).
            max_concurrency: KV states preallocated; that many generations run at once.
            model_dir: the Hugging Face checkpoint for the ``torch`` backend (default: the manifest's source).
            cuda_graph: capture the decode step as a CUDA graph (GPU backends; default ``TOPV_CUDA_GRAPH``).
            wait_seconds: how long a generation waits for a free KV state before raising ``BusyError``.
            precision: ``openvino``: ``f32`` (default, the tokens of ``ort-cpu``), ``bf16``, ``f16`` or ``auto`` for
                the graphs after the pruning decision (every graph without pruning); the graphs that choose the kept
                tokens stay float32 unless ``kept_set="follow"``.
            weights: ``openvino``: ``"int8"`` for NNCF int8 weights in those graphs (made once, cached).
            low_memory: ``ort-cpu``: hold each weight once (no prepacked copies), at some decode speed.
            profile_dir: ``ort-cpu``/``ort-cuda``: ONNX Runtime's per-node trace of every graph goes there (outside
                the export folder); ``pipeline.backend.end_profiling()`` closes the traces. See ``topv-bench --op-profile``.
            kept_set: ``openvino``: ``"float32"`` (default) or ``"follow"``: whether vision and layers 0..K, which decide the
                kept tokens, also take ``precision``/``weights`` (faster; the kept set may differ: measure it with
                ``topv-eval --agreement``). See :mod:`topv.precision`.

        Raises:
            ArtifactError / ChecksumMismatchError / IncompatibleArtifactError: the folder is unusable.
            BackendUnavailableError: the backend's library is not installed.
        """
        cls_ = backend_class(backend)
        options = BackendOptions(threads=threads, device=device, cuda_graph=cuda_graph, model_dir=model_dir,
                                 precision=precision, weights=weights, low_memory=low_memory, profile_dir=profile_dir,
                                 kept_set=kept_set)
        cls_.check_options(options)
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise InputError(f"max_concurrency must be an integer >= 1; got {max_concurrency!r}.")
        folder = Path(folder)
        if profile_dir is not None and (Path(profile_dir).resolve() == folder.resolve()
                                        or folder.resolve() in Path(profile_dir).resolve().parents):
            raise ConfigError(f"profile_dir {str(profile_dir)!r} lies in the export folder {str(folder)!r}; files there "
                              "would make the export fail its checks. Write the traces elsewhere.")
        manifest = read_manifest(folder)
        if not (manifest.validation or {}).get("ok"):
            raise ArtifactError(
                f"{str(folder)!r} was never validated (an export that was interrupted or failed its checks); "
                "re-export the model."
            )
        verify_folder(folder, manifest, checksums=verify_checksums)
        processor = get_family(manifest.spec.family).load_processor(folder / manifest.processor_folder)
        return cls(folder, manifest, cls_.load(folder, manifest, options), processor, max_concurrency, wait_seconds)

    # ------------------------------------------------------------------ generation
    def generate(self, image: Any, prompt: str, *, max_new_tokens: int | None = None, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, stream: bool = False, stop_token_ids: list[int] | None = None,
                 ignore_eos: bool = False) -> RunResult | TextStream:
        """Answer ``prompt`` about ``image``.

        Args:
            image: a path, PIL image or (H, W, 3) uint8 array.
            prompt: the question, formatted with the model's chat template.
            max_new_tokens: at most the export's ``--max-new-tokens`` (its default).
            temperature: 0 (default) is greedy; > 0 samples with ``top_p`` and ``seed``.
            stream: return a :class:`TextStream` of text pieces instead of a :class:`RunResult`.
            stop_token_ids: extra stop tokens besides the model's eos.
            ignore_eos: generate exactly ``max_new_tokens`` (benchmarks).

        Raises:
            InputError (ImageError, PromptTooLongError, ...): the request cannot be run; nothing was started.
            BusyError: every KV state stays in use (see ``max_concurrency``).
        """
        t_start = time.perf_counter()
        limit = self.manifest.shapes.max_new_tokens
        max_new = limit if max_new_tokens is None else check_max_new_tokens(max_new_tokens)
        if max_new > limit:
            positions = self.manifest.spec.max_position_embeddings
            room = positions - self.manifest.shapes.max_prompt_tokens if positions else None
            fix = (f"re-export with --max-new-tokens {max_new}" if room is None or max_new <= room else
                   f"the model's {positions} positions leave room for at most {room} new tokens after a "
                   f"{self.manifest.shapes.max_prompt_tokens}-token prompt (re-export with --max-new-tokens {room}, or a "
                   "smaller --max-prompt-tokens)")
            raise InputError(f"max_new_tokens={max_new} exceeds the {limit} new tokens this folder's static KV cache was "
                             f"exported for; ask for at most {limit}, or {fix}.")
        sampling = SamplingConfig(temperature=temperature, top_p=top_p, seed=seed)
        inputs = self.prepare_inputs(image, prompt)  # errors surface here, before any state is taken
        inputs["preprocess"] = time.perf_counter() - t_start
        lease = _Lease(self, self._take_state())
        events = self._run(lease, inputs, max_new, sampling, stop_token_ids, ignore_eos, t_start)
        if stream:
            return TextStream(events, lease)
        result = None
        for item in events:
            result = item if isinstance(item, RunResult) else result
        return result

    def _take_state(self) -> ChainState:
        try:
            return self._states.get_nowait()
        except queue.Empty:
            pass
        if self._holders.get(threading.get_ident(), 0):
            raise BusyError(
                f"All {self.max_concurrency} KV state(s) of this Pipeline are in use and this thread holds one in an "
                "unfinished stream, so waiting would never end. Finish or close() that stream first, or load the "
                "Pipeline with a larger max_concurrency."
            )
        try:
            return self._states.get(timeout=self.wait_seconds)
        except queue.Empty:
            raise BusyError(
                f"All {self.max_concurrency} KV state(s) of this Pipeline stayed in use for {self.wait_seconds:.0f} s "
                "(an unfinished stream holds one until it is read to the end or closed); retry later, or load the "
                "Pipeline with a larger max_concurrency."
            ) from None

    def prepare_inputs(self, image: Any, prompt: str) -> dict[str, Any]:
        """``input_ids`` and ``pixel_values`` (in the vision graph's dtype) for a request, checked against the export."""
        inputs = self.processor.encode(image, prompt)
        input_ids = inputs["input_ids"]
        length, shapes, spec = int(input_ids.shape[1]), self.manifest.shapes, self.manifest.spec
        if length > shapes.max_prompt_tokens:
            raise PromptTooLongError(
                f"The prompt is {length} tokens ({spec.num_visual_tokens} of them visual) but this folder was exported "
                f"for at most {shapes.max_prompt_tokens}; shorten the question or re-export with --max-prompt-tokens "
                f"{length} (or more)."
            )
        image_span(input_ids[0], spec.image_token_id, spec.num_visual_tokens)
        dtype = np.dtype(self.manifest.graphs["vision"].inputs[0].dtype)
        return {"input_ids": input_ids, "pixel_values": np.ascontiguousarray(inputs["pixel_values"], dtype=dtype)}

    def _run(self, lease: _Lease, inputs: dict[str, Any], max_new: int, sampling: SamplingConfig,
             extra_stops: list[int] | None, ignore_eos: bool, t_start: float) -> Iterator[str | RunResult]:
        state = lease.state
        try:
            stops = frozenset() if ignore_eos else self.stop_ids | set(extra_stops or ())
            sampler, detok = TokenSampler(sampling), _Incremental(self.processor.tokenizer)
            timings: dict[str, Any] = {"preprocess": inputs["preprocess"]}
            t0 = time.perf_counter()
            features = self.chain.vision(inputs["pixel_values"])
            self.backend.synchronize()
            timings["vision"] = time.perf_counter() - t0
            out = self.chain.prefill(state, inputs["input_ids"], features)
            timings.update(out.timings)
            logits, tokens, decode_times = out.logits, [], []
            timings["decode"] = decode_times
            for step in range(max_new):
                token = sampler(logits)
                tokens.append(token)
                if step == 0:
                    timings["ttft"] = time.perf_counter() - t_start
                piece = detok.push(tokens)
                if piece:
                    yield piece
                if token in stops or step == max_new - 1:
                    break
                t0 = time.perf_counter()
                logits = self.chain.decode(state, token)
                decode_times.append(time.perf_counter() - t0)
            timings["total"] = time.perf_counter() - t_start
            yield RunResult(text=self.processor.tokenizer.decode(tokens, skip_special_tokens=True), token_ids=tokens,
                            kept_indices=out.kept_indices, timings=timings, prompt_length=out.prompt_length,
                            kept_length=out.kept_length)
        finally:
            lease.release()

    # ------------------------------------------------------------------ introspection
    @property
    def kv_cache_bytes(self) -> int:
        return self.manifest.kv.nbytes
