"""The PyTorch reference: a Hugging Face VLM with visual tokens pruned once, inside prefill, at layer K.

Transformers' modeling code is not forked. The pipeline calls the model's own modules (vision tower,
projector, embedding, rotary embedding, decoder layers, norm, LM head), found through the model's
family plug-in, in the order the model does, and hooks layer K's post-attention norm to read TopV's
targets:

    layers 0..K    all prompt tokens; KV cache holds every position
    prune          importance at layer K (sources: input of layer K; targets: its post-attention norm)
    layers K+1..   the text tokens plus the kept visual tokens, each at its original position ids
                   (1-D RoPE or 3-D M-RoPE); their KV cache holds only those
    decode         new tokens at position (last prompt position + 1 + t): full KV below K+1, reduced above

``layer`` is 0-indexed: K = 2 runs three layers at full length. With pruning off, greedy tokens equal
``model.generate()`` token for token (tests check it).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from topv.errors import InputError, UnsupportedModelError
from topv.families import Family, family_for_config
from topv.inputs import image_span
from topv.pruning.baselines import random_selection, uniform_selection
from topv.pruning.config import TopVConfig
from topv.pruning.importance import token_importance
from topv.pruning.selection import check_keep, select_tokens
from topv.spec import ModelSpec

METHODS = ("topv", "fastv", "random", "uniform", "none")
_SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2")


@dataclass
class PrefillResult:
    """What prefill leaves behind for decoding."""

    logits: torch.Tensor  # (1, vocab) of the last prompt token
    cache: Any  # transformers DynamicCache, per-layer lengths differ when pruned
    next_position: int  # the first decode position id (prompt positions' maximum + 1)
    kept_indices: list[int] | None  # positions within the visual tokens, sorted; None without pruning
    prompt_length: int
    kept_length: int  # sequence length seen by layers > K
    timings: dict[str, float] = field(default_factory=dict)
    scores: torch.Tensor | None = None  # (N_grid,) the key the selection ranked (TopV: log space; FastV: attention)


def _layer_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def cache_layer_lengths(cache: Any) -> list[int]:
    """Sequence length held by each layer of a transformers cache."""
    return [int(layer.keys.shape[-2]) if getattr(layer, "keys", None) is not None else 0 for layer in cache.layers]


def cache_bytes(cache: Any) -> list[int]:
    """Bytes of keys + values held by each layer of a transformers cache."""
    return [
        int(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size())
        if getattr(layer, "keys", None) is not None else 0
        for layer in cache.layers
    ]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class ReferencePipeline:
    """Prefill-with-pruning and decode steps on a Hugging Face VLM of a supported family.

    Args:
        model: the loaded model (eval mode; any device and dtype).
        layer: pruning layer K (0-indexed), see the module docstring.
        keep: visual tokens to keep (grid tokens; a CLS token with the "full" strategy is always kept);
            None or the full count disables pruning (``layer`` then plays no part).
        method: ``topv``, ``fastv``, ``random``, ``uniform`` or ``none``.
        config: TopV hyperparameters (``recovery_fraction`` also applies to ``fastv``).
        seed: seed of the ``random`` method.
        spec: the model's geometry (default: read from the model's config by its family).
    """

    def __init__(self, model: Any, *, layer: int = 2, keep: int | None = None, method: str = "topv",
                 config: TopVConfig | None = None, seed: int = 0, spec: ModelSpec | None = None) -> None:
        self.model = model
        self.family: Family = family_for_config(model.config.to_dict())
        self.spec: ModelSpec = spec or self.family.spec(model.config.to_dict())
        if method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
        if keep is not None:
            check_keep(keep, self.spec.num_grid_tokens)
        self.prune = method != "none" and keep is not None and keep < self.spec.num_grid_tokens
        self.layer = self.spec.head_layers(layer, self.prune)
        self.keep = keep if self.prune else None
        self.method = method if self.prune else "none"
        self.config = config or TopVConfig()
        self.seed = seed
        self.lm = self.family.language_model(model)
        self.lm_head = self.family.lm_head(model)
        attn = getattr(self.lm.config, "_attn_implementation", "sdpa") or "sdpa"
        if attn not in _SUPPORTED_ATTENTION:
            raise UnsupportedModelError(
                f"Attention implementation {attn!r} is not supported by the reference pipeline; load the model "
                "with attn_implementation='sdpa' (or 'eager')."
            )
        self.attn_implementation = attn

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def image_features(self, inputs: dict[str, Any]) -> torch.Tensor:
        """``(1, N, D)`` visual tokens from the processor's outputs, exactly as the model computes them."""
        return self.family.image_features(self.model, inputs)

    @torch.no_grad()
    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the image features scattered over the image placeholders."""
        embeds = self.lm.embed_tokens(input_ids.to(self.device))
        mask = (input_ids == self.spec.image_token_id).to(self.device).unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, image_features.to(embeds.device, embeds.dtype))

    def _mask(self, q_len: int, kv_len: int, dtype: torch.dtype) -> torch.Tensor | None:
        """The mask transformers builds for one unpadded sequence (None lets SDPA/FA use is_causal)."""
        if self.attn_implementation != "eager":
            return None
        visible = torch.ones(q_len, kv_len, dtype=torch.bool, device=self.device).tril(kv_len - q_len)
        mask = torch.zeros(q_len, kv_len, dtype=dtype, device=self.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        return mask[None, None]

    def _run_layers(self, hidden: torch.Tensor, position_ids: torch.Tensor, cache: Any, layers: range, kv_len: int) -> torch.Tensor:
        mask = self._mask(hidden.shape[1], kv_len, hidden.dtype)
        position_embeddings = self.family.hf_rotary(self.lm, hidden, position_ids)
        for i in layers:
            hidden = _layer_output(self.lm.layers[i](
                hidden, attention_mask=mask, position_ids=position_ids, past_key_values=cache, use_cache=True,
                position_embeddings=position_embeddings,
            ))
        return hidden

    @contextlib.contextmanager
    def _capture_layer(self) -> Iterator[dict[str, Any]]:
        """Capture layer K's input, post-attention-norm output, and attention input (for FastV)."""
        layer = self.lm.layers[self.layer]
        captured: dict[str, Any] = {}

        def on_layer(_m: Any, args: tuple, kwargs: dict) -> None:
            captured["source"] = args[0] if args else kwargs["hidden_states"]

        def on_post_norm(_m: Any, _args: tuple, output: torch.Tensor) -> None:
            captured["target"] = output

        def on_attn(_m: Any, args: tuple, kwargs: dict) -> None:
            captured["attn_input"] = args[0] if args else kwargs["hidden_states"]

        handles = [
            layer.register_forward_pre_hook(on_layer, with_kwargs=True),
            layer.post_attention_layernorm.register_forward_hook(on_post_norm),
            layer.self_attn.register_forward_pre_hook(on_attn, with_kwargs=True),
        ]
        try:
            yield captured
        finally:
            for h in handles:
                h.remove()

    def fastv_scores(self, attn_input: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """``(S,)`` FastV importance: layer K's attention from the last prompt token, averaged over heads."""
        attn, spec = self.lm.layers[self.layer].self_attn, self.spec
        x, seq = attn_input, attn_input.shape[1]
        cos, sin = (t.unsqueeze(1) for t in self.family.rotary(self.lm, x, position_ids))
        q = attn.q_proj(x[:, -1:]).view(1, 1, spec.num_heads, spec.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(1, seq, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
        q = q * cos[:, :, -1:] + rotate_half(q) * sin[:, :, -1:]
        k = (k * cos + rotate_half(k) * sin).repeat_interleave(spec.num_heads // spec.num_kv_heads, dim=1)
        scale = getattr(attn, "scaling", spec.head_dim**-0.5)
        weights = torch.softmax((q.float() @ k.float().transpose(-1, -2)) * scale, dim=-1)
        return weights.mean(dim=1)[0, 0]

    def select(self, captured: dict[str, Any], offset: int, position_ids: torch.Tensor,
               spec: ModelSpec | None = None) -> tuple[list[int], torch.Tensor | None]:
        """Kept indices within the visual tokens for the configured method, and the scores it ranked."""
        spec = spec or self.spec
        extra = spec.num_extra_visual_tokens
        lo, hi = offset + extra, offset + spec.num_visual_tokens
        scores = None
        if self.method == "topv":
            scores = token_importance(captured["source"][0, lo:hi], captured["target"][0, lo:hi], spec.grid_hw, self.config,
                                      log=True)
            kept = select_tokens(scores, self.keep, self.config)
        elif self.method == "fastv":
            scores = self.fastv_scores(captured["attn_input"], position_ids)[lo:hi]
            kept = select_tokens(scores, self.keep, self.config)
        elif self.method == "random":
            kept = random_selection(spec.num_grid_tokens, self.keep, self.seed)
        else:
            kept = uniform_selection(spec.grid_hw, self.keep)
        kept_visual = list(range(extra)) + [extra + int(i) for i in kept.cpu()]
        return kept_visual, (scores.detach().float().cpu() if scores is not None else None)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, inputs: dict[str, Any], *,
                image_features: torch.Tensor | None = None, kept: list[int] | None = None) -> PrefillResult:
        """Run the prompt through the model, pruning at layer K; returns the last token's logits.

        ``inputs`` are the processor's outputs (the vision tower runs on them unless ``image_features`` are given).
        ``kept`` replaces the selection (indices within the visual tokens, as ``kept_indices``; the scores are still
        computed): the export's check uses it to follow an export whose kept set differs at a near-tie.
        """
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise InputError(f"The reference pipeline runs one prompt at a time; got input_ids {tuple(input_ids.shape)}.")
        timings: dict[str, float] = {}
        t0 = self._now()
        feats = self.image_features(inputs) if image_features is None else image_features
        timings["vision"] = self._now() - t0
        spec = self.family.request_spec(self.spec, inputs)
        prune = self.prune and check_keep(self.keep, spec.num_grid_tokens) < spec.num_grid_tokens
        offset = image_span(input_ids[0].tolist(), spec.image_token_id, spec.num_visual_tokens)
        seq = input_ids.shape[1]
        t0 = self._now()
        input_ids = input_ids.to(self.device)
        hidden = self.embed(input_ids, feats)
        cache = _new_cache(self.lm.config)
        positions = self.family.position_ids(input_ids, spec)
        with self._capture_layer() as captured:
            hidden = self._run_layers(hidden, positions, cache, range(0, self.layer + 1), seq)
        timings["prefill_head"] = self._now() - t0
        kept_visual, scores = None, None
        t0 = self._now()
        if prune:
            kept_visual, scores = self.select(captured, offset, positions, spec)
            if kept is not None:
                kept_visual = sorted(int(i) for i in kept)
            keep_pos = list(range(offset)) + [offset + i for i in kept_visual] + list(range(offset + spec.num_visual_tokens, seq))
            index = torch.tensor(keep_pos, device=self.device)
            hidden, positions_kept = hidden[:, index], positions[..., index]
        else:
            positions_kept = positions
        timings["prune"] = self._now() - t0
        t0 = self._now()
        hidden = self._run_layers(hidden, positions_kept, cache, range(self.layer + 1, spec.num_layers), hidden.shape[1])
        logits = self.lm_head(self.lm.norm(hidden)[:, -1:, :])[:, -1]
        timings["prefill_tail"] = self._now() - t0
        return PrefillResult(logits=logits, cache=cache, next_position=int(positions.max()) + 1, kept_indices=kept_visual,
                             prompt_length=seq, kept_length=int(hidden.shape[1]), timings=timings, scores=scores)

    @torch.no_grad()
    def decode_step(self, state: PrefillResult, token_id: int, step: int) -> torch.Tensor:
        """Logits ``(1, vocab)`` after feeding ``token_id`` as the ``step``-th new token (0-based)."""
        hidden = self.lm.embed_tokens(torch.tensor([[token_id]], device=self.device))
        position = self.family.decode_position_ids(torch.tensor([[state.next_position + step]], device=self.device))
        lengths = cache_layer_lengths(state.cache)
        hidden = self._run_layers(hidden, position, state.cache, range(0, self.layer + 1), lengths[0] + 1)
        if self.layer + 1 < self.spec.num_layers:
            hidden = self._run_layers(hidden, position, state.cache, range(self.layer + 1, self.spec.num_layers),
                                      lengths[self.layer + 1] + 1)
        return self.lm_head(self.lm.norm(hidden))[:, -1]

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return device_now(self.device)

    @property
    def device(self) -> torch.device:
        return self.lm.embed_tokens.weight.device


def device_now(device: torch.device) -> float:
    """A timestamp after the device's queued work is done, so stage timings are real on GPUs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _new_cache(text_config: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=text_config)
