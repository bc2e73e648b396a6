"""PyTorch modules that become the exported graphs (and that the ``torch`` backend runs).

Each module reuses the Hugging Face model's own submodules (found through its family plug-in: vision
tower, projector, embedding, norms, projections, MLPs, rotary embedding) and writes out only what a
static graph needs that transformers' code does not offer: attention over explicit key/value tensors
with in-graph masks, the image-feature merge, and the pruning step.

Graph data flow (batch 1; S prompt tokens, N visual tokens, N_g grid tokens, S' = S - N + kept;
positions are (1, S) for RoPE or (3, 1, S) for M-RoPE)::

    pixel_values ──► [vision] ──► image_features (1, N, D)
    input_ids (1,S) + image_features ──► [prefill_head: embed, merge, positions, layers 0..K]
        ──► hidden_states (1,S,D), position_ids, prune_source/prune_target (1,N_g,D), present_{key,value}.0..K
    hidden_states, position_ids, prune_source/target, input_ids ──► [prune: cost, Sinkhorn, importance,
        top-k, uniform recovery, gather] ──► kept_indices (1,k), kept_hidden_states (1,S',D), kept_position_ids
    hidden_states + position_ids ──► [prefill_tail: layers K+1..L-1, norm, lm_head(last)]
        ──► logits (1,V), present_{key,value}.K+1..L-1
    input_ids (1,1), position_ids (1,1), past lengths, past_{key,value}.* (static buffers)
        ──► [decode_step: embed, all layers, norm, lm_head] ──► logits, new_{key,value}.*
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from topv.families import Family
from topv.pruning.config import TopVConfig
from topv.pruning.importance import token_importance
from topv.pruning.selection import select_tokens
from topv.reference.pipeline import rotate_half
from topv.spec import ModelSpec

MASKED = -1.0e9  # added to masked attention scores (float32): exp underflows to exactly 0


class DecoderLayerMath:
    """One Llama-style decoder layer over explicit keys/values, reusing the layer's own submodules."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.groups = spec.num_heads // spec.num_kv_heads
        self.scale = spec.head_dim**-0.5

    def project(self, layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Queries ``(1, kvh, g, q, hd)`` and keys/values ``(1, kvh, q, hd)`` after RoPE."""
        spec, attn = self.spec, layer.self_attn
        x = layer.input_layernorm(hidden)
        q = attn.q_proj(x).view(1, -1, spec.num_heads, spec.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(1, -1, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(1, -1, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        return q.reshape(1, spec.num_kv_heads, self.groups, -1, spec.head_dim), k, v

    def finish(self, layer: nn.Module, hidden: torch.Tensor, attn_out: torch.Tensor):
        """Residual + MLP after attention. ``attn_out`` is ``(1, kvh, g, q, hd)``; returns (output, post-norm)."""
        spec = self.spec
        out = attn_out.reshape(1, spec.num_heads, -1, spec.head_dim).transpose(1, 2).reshape(1, -1, spec.num_heads * spec.head_dim)
        a = hidden + layer.self_attn.o_proj(out)
        z = layer.post_attention_layernorm(a)
        return a + layer.mlp(z), z

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """float32 scaled scores ``(1, kvh, g, q, kv)``."""
        return torch.matmul(q * self.scale, k.unsqueeze(2).transpose(-1, -2)).float()

    @staticmethod
    def causal_mask(length_like: torch.Tensor) -> torch.Tensor:
        """``(q, q)`` float32 additive causal mask over a chunk (the sequence order is the causal order)."""
        idx = torch.cumsum(torch.ones_like(length_like[0], dtype=torch.int64), dim=0)
        return (idx.unsqueeze(0) > idx.unsqueeze(1)).to(torch.float32) * MASKED

    @staticmethod
    def cache_mask(capacity: int, past_length: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``(capacity,)`` float32 additive mask hiding the slots at and after ``past_length``."""
        return (torch.arange(capacity, device=device) >= past_length).to(torch.float32) * MASKED

    def causal_attention(self, q, k, v, mask: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.scores(q, k) + mask, dim=-1).to(v.dtype)
        return torch.matmul(probs, v.unsqueeze(2))

    def cached_attention(self, q, k_new, v_new, past_k, past_v, mask: torch.Tensor) -> torch.Tensor:
        """One new token attending to the valid slots of static buffers (additive ``mask``) plus itself.

        The buffers are read, never concatenated or copied: scores over the past and over the new key
        are computed separately and joined only as (1, kvh, g, 1, C+1) float32 scores.
        """
        capacity = past_k.shape[2]
        past_scores = self.scores(q, past_k) + mask
        probs = torch.softmax(torch.cat([past_scores, self.scores(q, k_new)], dim=-1), dim=-1).to(past_v.dtype)
        out = torch.matmul(probs[..., :capacity], past_v.unsqueeze(2))
        return out + probs[..., capacity:] * v_new.unsqueeze(2)


class _Decoder(nn.Module):
    """Shared parts of the decoder graphs: the family, the language model and the layer math."""

    def __init__(self, model: Any, family: Family, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        self.family = family
        self.lm = family.language_model(model)
        self.lm_head = family.lm_head(model)
        self.spec = spec
        self.layer = layer
        self.math = DecoderLayerMath(spec)

    def prompt_layers(self, hidden, position_ids, layers: range, capture: int | None = None):
        """Causal self-attention layers over a prompt chunk; returns (hidden, presents, source, target)."""
        cos, sin = self.family.rotary(self.lm, hidden, position_ids)
        mask = self.math.causal_mask(hidden[..., 0])
        presents, source, target = [], hidden, hidden
        for i in layers:
            layer = self.lm.layers[i]
            q, k, v = self.math.project(layer, hidden, cos, sin)
            attn = self.math.causal_attention(q, k, v, mask)
            if i == capture:
                source = hidden
            hidden, z = self.math.finish(layer, hidden, attn)
            if i == capture:
                target = z
            presents += [k, v]
        return hidden, presents, source, target


class PrefillHeadGraph(_Decoder):
    """Embedding, image merge, positions and decoder layers 0..K over the whole prompt."""

    def __init__(self, model: Any, family: Family, spec: ModelSpec, layer: int, pruned: bool) -> None:
        super().__init__(model, family, spec, layer)
        self.pruned = pruned

    def forward(self, input_ids: torch.Tensor, image_features: torch.Tensor):
        spec = self.spec
        embeds = self.lm.embed_tokens(input_ids)
        is_image = input_ids == spec.image_token_id
        # The i-th image token takes the i-th image feature (transformers' masked_scatter).
        feature_index = (torch.cumsum(is_image.to(torch.int64), dim=1) - 1).clamp(0, spec.num_visual_tokens - 1)
        merged = torch.where(is_image.unsqueeze(-1), image_features[0][feature_index[0]].unsqueeze(0).to(embeds.dtype), embeds)
        position_ids = self.family.position_ids(input_ids, spec)
        hidden, presents, source, target = self.prompt_layers(merged, position_ids, range(self.layer + 1), self.layer)
        if not self.pruned:
            return (hidden, position_ids, *presents)
        # Grid tokens: after the image offset and any leading non-grid visual token (CLS).
        offset = torch.argmax(is_image.to(torch.int64), dim=1)
        grid_index = offset + spec.num_extra_visual_tokens + torch.arange(spec.num_grid_tokens, device=input_ids.device)
        return (hidden, position_ids, source[:, grid_index], target[:, grid_index], *presents)


class PruneGraph(nn.Module):
    """TopV: cost, fixed-iteration Sinkhorn, importance, top-k + uniform recovery, gather of kept tokens."""

    def __init__(self, spec: ModelSpec, keep: int, config: TopVConfig) -> None:
        super().__init__()
        self.spec = spec
        self.keep = keep
        self.config = config

    def forward(self, hidden_states, position_ids, prune_source, prune_target, input_ids):
        spec = self.spec
        scores = token_importance(prune_source, prune_target, spec.grid_hw, self.config, log=True)
        kept_grid = select_tokens(scores, self.keep, self.config)  # (1, keep)
        extra = spec.num_extra_visual_tokens
        kept = torch.cat([torch.arange(extra, device=kept_grid.device).unsqueeze(0), kept_grid + extra], dim=1)
        kept_count = kept.shape[1]
        offset = torch.argmax((input_ids == spec.image_token_id).to(torch.int64), dim=1)  # (1,)
        # Output r of the kept sequence comes from: r (text before the image), the kept visual tokens, or
        # r - kept + N (text after the image). Elementwise, so S stays a dynamic axis.
        r = torch.arange(input_ids.shape[1] - spec.num_visual_tokens + kept_count, device=input_ids.device)
        in_image = (r >= offset) & (r < offset + kept_count)
        after_image = r >= offset + kept_count
        from_kept = offset + kept[0][(r - offset).clamp(0, kept_count - 1)]
        source = torch.where(in_image, from_kept, torch.where(after_image, r - kept_count + spec.num_visual_tokens, r))
        return kept, hidden_states[:, source], position_ids[..., source]


class PrefillTailGraph(_Decoder):
    """Decoder layers K+1..L-1 over the kept sequence, final norm, LM head on the last position."""

    def forward(self, hidden_states: torch.Tensor, position_ids: torch.Tensor):
        hidden, presents, _, _ = self.prompt_layers(hidden_states, position_ids, range(self.layer + 1, self.spec.num_layers))
        logits = self.lm_head(self.lm.norm(hidden)[:, -1:, :])[:, 0].float()
        return (logits, *presents)


class DecodeStepGraph(_Decoder):
    """One new token through every layer, reading static KV buffers; returns logits and the new K/V.

    Inputs: input_ids (1,1), position_ids (1,1), past_length_head (1,), past_length_tail (1,), then
    past_key.i / past_value.i for every layer (capacity C_head for i <= K, C_tail for i > K).
    Outputs: logits (1,V), then new_key.i / new_value.i (1, kvh, 1, hd); the runtime writes them into
    slot ``past_length`` of the buffers.
    """

    def forward(self, input_ids, position_ids, past_length_head, past_length_tail, *past):
        hidden = self.lm.embed_tokens(input_ids)
        cos, sin = self.family.rotary(self.lm, hidden, self.family.decode_position_ids(position_ids))
        device = input_ids.device
        mask_head = self.math.cache_mask(past[0].shape[2], past_length_head, device)
        mask_tail = self.math.cache_mask(past[-1].shape[2], past_length_tail, device)
        new = []
        for i in range(self.spec.num_layers):
            layer = self.lm.layers[i]
            q, k, v = self.math.project(layer, hidden, cos, sin)
            mask = mask_head if i <= self.layer else mask_tail
            attn = self.math.cached_attention(q, k, v, past[2 * i], past[2 * i + 1], mask)
            hidden, _ = self.math.finish(layer, hidden, attn)
            new += [k, v]
        logits = self.lm_head(self.lm.norm(hidden))[:, 0].float()
        return (logits, *new)
