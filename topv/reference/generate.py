"""``topv.generate``: one image + one prompt -> text, with visual tokens pruned at layer K (PyTorch reference)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from topv.errors import InputError
from topv.pruning.config import TopVConfig
from topv.sampling import SamplingConfig, TokenSampler, check_max_new_tokens, stop_ids


@dataclass
class GenerationResult:
    """The outcome of one generation.

    Attributes:
        token_ids: the new tokens (a stop token, when reached, is the last one).
        text: the new tokens decoded without special tokens.
        kept_indices: kept positions within the visual tokens (sorted), or None without pruning.
        prompt_length: prompt tokens (visual tokens included) before pruning.
        kept_length: tokens the layers after K hold for the prompt.
        timings: seconds per stage: vision, prefill_head, prune, prefill_tail, and decode (a list).
        kv_bytes: KV-cache bytes per layer at the end of the generation.
    """

    token_ids: list[int]
    text: str
    kept_indices: list[int] | None
    prompt_length: int
    kept_length: int
    timings: dict[str, Any] = field(default_factory=dict)
    kv_bytes: list[int] = field(default_factory=list)


def decode_tokens(pipe: Any, state: Any, max_new_tokens: int, sampler: TokenSampler, stops: frozenset[int],
                  decode_times: list[float] | None = None) -> Iterator[int]:
    """Yield tokens chosen from the prefill's logits and each decode step's, until a stop token or the limit."""
    logits = state.logits
    for step in range(max_new_tokens):
        token = sampler(logits[0].float().cpu().numpy())
        yield token
        if token in stops or step == max_new_tokens - 1:
            return
        t0 = time.perf_counter()
        logits = pipe.decode_step(state, token, step)
        if decode_times is not None:
            decode_times.append(time.perf_counter() - t0)


def generate_stream(
    model: Any, processor: Any, image: Any, prompt: str, *, keep: int | None = None, layer: int = 2,
    method: str = "topv", max_new_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
    config: TopVConfig | None = None, stop_token_ids: list[int] | None = None, ignore_eos: bool = False,
) -> Iterator[int | GenerationResult]:
    """Like :func:`generate`, but yields each new token id as it is chosen, then the result."""
    import torch

    from topv.reference.loading import load_model, model_family
    from topv.reference.pipeline import ReferencePipeline, cache_bytes

    if isinstance(model, (str, Path)):
        model, loaded = load_model(model)
        processor = processor or loaded
    check_max_new_tokens(max_new_tokens)
    sampler = TokenSampler(SamplingConfig(temperature=temperature, top_p=top_p, seed=seed))
    processor = model_family(model).wrap_processor(processor)
    pipe = ReferencePipeline(model, layer=layer, keep=keep, method=method, config=config, seed=seed)
    inputs = processor.encode(image, prompt)
    limit = pipe.spec.max_position_embeddings
    if limit and inputs["input_ids"].shape[1] + max_new_tokens > limit:
        raise InputError(
            f"The prompt ({inputs['input_ids'].shape[1]} tokens) plus max_new_tokens={max_new_tokens} exceeds the model's "
            f"{limit} positions; ask for at most {max(1, limit - inputs['input_ids'].shape[1])} new tokens."
        )
    gen_config = getattr(model, "generation_config", None)
    stops = frozenset() if ignore_eos else stop_ids(getattr(gen_config, "eos_token_id", None), stop_token_ids)

    with torch.no_grad():
        state = pipe.prefill(torch.from_numpy(inputs["input_ids"]), inputs)
        timings: dict[str, Any] = dict(state.timings)
        timings["decode"] = []
        tokens: list[int] = []
        for token in decode_tokens(pipe, state, max_new_tokens, sampler, stops, timings["decode"]):
            tokens.append(token)
            yield token
    yield GenerationResult(
        token_ids=tokens, text=processor.tokenizer.decode(tokens, skip_special_tokens=True),
        kept_indices=state.kept_indices, prompt_length=state.prompt_length, kept_length=state.kept_length,
        timings=timings, kv_bytes=cache_bytes(state.cache),
    )


def generate(
    model: Any, processor: Any, image: Any, prompt: str, *, keep: int | None = None, layer: int = 2,
    method: str = "topv", max_new_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
    config: TopVConfig | None = None, stop_token_ids: list[int] | None = None, ignore_eos: bool = False,
) -> GenerationResult:
    """Answer ``prompt`` about ``image`` with the PyTorch reference pipeline.

    Args:
        model: a Hugging Face model of a supported family, or a local checkpoint folder (loaded with its processor).
        processor: the model's processor (may be None when ``model`` is a folder).
        image: a path, a PIL image or an ``(H, W, 3)`` uint8 array.
        prompt: the user's question; formatted with the processor's chat template.
        keep: visual (grid) tokens to keep; None keeps all (no pruning).
        layer: pruning layer K, 0-indexed; layers 0..K see every token.
        method: ``topv``, ``fastv``, ``random``, ``uniform`` or ``none``.
        max_new_tokens: tokens to generate at most.
        temperature: 0 (default) is greedy; above 0 samples with ``top_p`` and ``seed`` (as ``Pipeline.generate``).
        config: TopV hyperparameters (defaults when None).
        stop_token_ids: extra stop tokens besides the model's ``eos_token_id``.
        ignore_eos: generate exactly ``max_new_tokens`` tokens (comparisons and benchmarks).
    """
    result = None
    for item in generate_stream(model, processor, image, prompt, keep=keep, layer=layer, method=method,
                                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                config=config, stop_token_ids=stop_token_ids, ignore_eos=ignore_eos):
        result = item
    if not isinstance(result, GenerationResult):  # pragma: no cover - the stream always ends with its result
        raise RuntimeError("generation ended without a result")
    return result
