"""``Pipeline``: the same generation API over every backend (ONNX Runtime CPU/CUDA, TensorRT, PyTorch).

    pipe = Pipeline.load("out/llava-topv", backend="ort-cpu")
    result = pipe.generate("scene.png", "What colour is the square?", max_new_tokens=16)
    for piece in pipe.generate("scene.png", "Describe it.", stream=True):
        print(piece, end="", flush=True)

The prompt goes through the exported folder's own processor and chat template (``topv.inputs``), the
image through its image processor; token choice is ``topv.generation.sampling``, shared with the
PyTorch reference, so a backend that reproduces the reference's logits reproduces its tokens.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from topv.errors import ArtifactError, InputError, PromptTooLongError
from topv.generation.sampling import SamplingConfig, TokenSampler, check_max_new_tokens, stop_ids
from topv.inputs import encode, image_span
from topv.manifest import read_manifest, verify_files

BACKENDS = ("ort-cpu", "ort-cuda", "trt", "torch")


@dataclass
class RunResult:
    """One generation.

    Attributes:
        text: the answer (special tokens removed).
        token_ids: the new tokens; a stop token, when reached, is the last one.
        kept_indices: kept positions within the visual tokens, or None without pruning.
        timings: seconds per stage: ``vision``, ``prefill_head``, ``prune``, ``prefill_tail``,
            ``decode`` (a list, one per step), ``ttft`` (image in -> first token chosen), ``total``.
        prompt_length / kept_length: prompt tokens before pruning / held by layers after K.
    """

    text: str
    token_ids: list[int]
    kept_indices: list[int] | None
    timings: dict[str, Any] = field(default_factory=dict)
    prompt_length: int = 0
    kept_length: int = 0

    def timings_ms(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.timings.items():
            out[key] = [round(v * 1e3, 3) for v in value] if isinstance(value, list) else round(value * 1e3, 3)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "kept_indices": self.kept_indices,
            "timings_ms": self.timings_ms(),
            "prompt_length": self.prompt_length,
            "kept_length": self.kept_length,
        }


class TextStream:
    """Iterator over text pieces of a streaming generation; ``.result`` is set when it is exhausted."""

    def __init__(self, pieces: Iterator[str | RunResult]) -> None:
        self._pieces = pieces
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
        close = getattr(self._pieces, "close", None)
        if close:
            close()


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


def _make_executor(folder: Path, manifest: dict[str, Any], backend: str, threads: int | None, device: str | None,
                   model_dir: str | Path | None = None, verify_checksums: bool = True) -> Any:
    if backend == "ort-cpu":
        from topv.runtime.ort_executor import OrtCpuExecutor

        return OrtCpuExecutor(folder, manifest, threads=threads)
    if backend == "ort-cuda":
        from topv.runtime.ort_cuda_executor import OrtCudaExecutor

        return OrtCudaExecutor(folder, manifest, threads=threads, device=device)
    if backend == "trt":
        from topv.engines.runtime import TrtExecutor

        from topv.config import trt_cuda_graph

        return TrtExecutor(folder, manifest, device=device, cuda_graph=trt_cuda_graph(), verify_checksums=verify_checksums)
    if backend == "torch":
        from topv.runtime.torch_executor import TorchExecutor

        return TorchExecutor(folder, manifest, threads=threads, device=device, model_dir=model_dir)
    raise InputError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")


class Pipeline:
    """A loaded export folder, ready to generate. Create with :meth:`load`.

    Thread-safe: each generation takes one of ``max_concurrency`` preallocated KV states (default 1,
    so concurrent calls run one after another and give the tokens they would give alone).
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], executor: Any, processor: Any, backend: str, max_concurrency: int) -> None:
        self.folder = folder
        self.manifest = manifest
        self.executor = executor
        self.processor = processor
        self.backend = backend
        spec = manifest["model"]["spec"]
        self.image_token_id = spec["image_token_id"]
        self.num_visual_tokens = spec["num_visual_tokens"]
        self.max_prompt_tokens = manifest["static_shapes"]["max_prompt_tokens"]
        self.max_new_tokens = manifest["static_shapes"]["max_new_tokens"]
        self.stop_ids = stop_ids(manifest["generation"].get("eos_token_id"))
        self._states: queue.Queue = queue.Queue()
        for _ in range(max_concurrency):
            self._states.put(executor.new_state())

    @classmethod
    def load(
        cls,
        folder: str | Path,
        backend: str = "ort-cpu",
        *,
        threads: int | None = None,
        device: str | None = None,
        verify_checksums: bool = True,
        max_concurrency: int = 1,
        model_dir: str | Path | None = None,
    ) -> "Pipeline":
        """Open an export folder: check the manifest and checksums, open the sessions, allocate the KV buffers.

        Args:
            backend: ``ort-cpu``, ``ort-cuda``, ``trt`` or ``torch``.
            threads: CPU threads (ONNX Runtime intra-op / torch); default all available cores.
            device: ``cuda:0`` style device for GPU backends (and ``torch``).
            verify_checksums: check every file's SHA-256 (sizes are always checked).
            max_concurrency: KV states preallocated; that many generations run at once.
            model_dir: the Hugging Face checkpoint for the ``torch`` backend (default: the manifest's source).

        Raises:
            ArtifactError / ChecksumMismatchError / IncompatibleArtifactError: the folder is unusable.
            BackendUnavailableError: the backend's library is not installed.
        """
        if backend not in BACKENDS:
            raise InputError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise InputError(f"max_concurrency must be an integer >= 1; got {max_concurrency!r}.")
        folder = Path(folder)
        manifest = read_manifest(folder)
        verify_files(folder, manifest, checksums=verify_checksums)
        processor = _load_processor(folder / manifest["processor"]["folder"])
        executor = _make_executor(folder, manifest, backend, threads, device, model_dir, verify_checksums)
        return cls(folder, manifest, executor, processor, backend, max_concurrency)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        image: Any,
        prompt: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stream: bool = False,
        stop_token_ids: list[int] | None = None,
        ignore_eos: bool = False,
    ) -> RunResult | TextStream:
        """Answer ``prompt`` about ``image``.

        Args:
            image: a path, PIL image or (H, W, 3) uint8 array.
            prompt: the question, formatted with the model's chat template.
            max_new_tokens: at most the export's ``--max-new-tokens`` (its default).
            temperature: 0 (default) is greedy; > 0 samples with ``top_p`` and ``seed``.
            stream: return a :class:`TextStream` of text pieces instead of a :class:`RunResult`.
            stop_token_ids: extra stop tokens besides the model's eos.
            ignore_eos: generate exactly ``max_new_tokens`` (benchmarks).
        """
        max_new = self.max_new_tokens if max_new_tokens is None else check_max_new_tokens(max_new_tokens)
        if max_new > self.max_new_tokens:
            raise InputError(
                f"max_new_tokens={max_new} exceeds the {self.max_new_tokens} new tokens this folder's static KV cache "
                f"was exported for; re-export with --max-new-tokens {max_new} or ask for fewer."
            )
        sampling = SamplingConfig(do_sample=temperature > 0, temperature=temperature, top_p=top_p, seed=seed)
        inputs = self._encode(image, prompt)  # errors surface here, before any state is taken
        events = self._run(inputs, max_new, sampling, stop_token_ids, ignore_eos)
        if stream:
            return TextStream(events)
        result = None
        for item in events:
            if isinstance(item, RunResult):
                result = item
        assert result is not None
        return result

    def _encode(self, image: Any, prompt: str) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        inputs = encode(self.processor, image, prompt, return_tensors="np")
        input_ids = np.asarray(inputs["input_ids"], dtype=np.int64)
        length = input_ids.shape[1]
        if length > self.max_prompt_tokens:
            raise PromptTooLongError(
                f"The prompt is {length} tokens ({self.num_visual_tokens} of them visual) but this folder was exported "
                f"for at most {self.max_prompt_tokens}; shorten the question or re-export with "
                f"--max-prompt-tokens {length} (or more)."
            )
        image_span(input_ids[0], self.image_token_id, self.num_visual_tokens)
        dtype = self.manifest["graphs"]["vision"]["inputs"][0]["dtype"]
        return {
            "input_ids": input_ids,
            "pixel_values": np.ascontiguousarray(inputs["pixel_values"], dtype=np.dtype(dtype)),
            "preprocess": time.perf_counter() - t0,
        }

    def _run(
        self, inputs: dict[str, Any], max_new: int, sampling: SamplingConfig, extra_stops: list[int] | None,
        ignore_eos: bool = False,
    ) -> Iterator[str | RunResult]:
        stops = frozenset() if ignore_eos else self.stop_ids | set(extra_stops or ())
        sampler = TokenSampler(sampling)
        detok = _Incremental(getattr(self.processor, "tokenizer", self.processor))
        state = self._states.get()
        try:
            t_start = time.perf_counter()
            timings: dict[str, Any] = {"preprocess": inputs["preprocess"]}
            t0 = time.perf_counter()
            features = self.executor.vision(inputs["pixel_values"])
            timings["vision"] = time.perf_counter() - t0
            out = self.executor.prefill(state, inputs["input_ids"], features)
            timings.update(out["timings"])
            logits = out["logits"]
            prompt_length = int(inputs["input_ids"].shape[1])
            tokens: list[int] = []
            decode_times: list[float] = []
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
                logits = self.executor.decode(state, token, prompt_length + step)
                decode_times.append(time.perf_counter() - t0)
            timings["total"] = time.perf_counter() - t_start
            tokenizer = getattr(self.processor, "tokenizer", self.processor)
            yield RunResult(
                text=tokenizer.decode(tokens, skip_special_tokens=True),
                token_ids=tokens,
                kept_indices=out["kept_indices"],
                timings=timings,
                prompt_length=prompt_length,
                kept_length=out["kept_length"],
            )
        finally:
            self._states.put(state)

    # ------------------------------------------------------------------ introspection
    @property
    def kv_cache_bytes(self) -> int:
        return int(self.manifest["kv_cache"]["bytes"])


def _load_processor(path: Path) -> Any:
    try:
        from transformers import AutoProcessor
    except ImportError as exc:
        from topv.errors import BackendUnavailableError

        raise BackendUnavailableError(
            "transformers is needed to read the exported tokenizer and image processor; `pip install transformers`."
        ) from exc
    if not path.is_dir():
        raise ArtifactError(f"The processor folder {str(path)!r} is missing; re-export the model.")
    return AutoProcessor.from_pretrained(str(path), local_files_only=True)

