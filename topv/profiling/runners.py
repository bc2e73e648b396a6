"""Runners the harness measures: a topv ``Pipeline`` and Hugging Face ``generate()`` baselines."""

from __future__ import annotations

import time
from typing import Any


class PipelineRunner:
    """One ``Pipeline.generate`` per run, exactly ``new_tokens`` tokens (eos ignored)."""

    def __init__(self, pipe: Any, image: Any, prompt: str, new_tokens: int, label: str) -> None:
        self.pipe = pipe
        self.image = image
        self.prompt = prompt
        self.new_tokens = new_tokens
        self.label = label
        self.last: Any = None

    def run_once(self) -> dict[str, Any]:
        r = self.pipe.generate(self.image, self.prompt, max_new_tokens=self.new_tokens, ignore_eos=True)
        self.last = r
        t = r.timings
        return {
            "vision": t["vision"],
            "prefill_head": t["prefill_head"],
            "prune": t["prune"],
            "prefill_tail": t["prefill_tail"],
            "prefill": t["prefill_head"] + t["prune"] + t["prefill_tail"],
            "ttft": t["ttft"],
            "total": t["total"],
            "decode": list(t["decode"]),
            "tokens": len(r.token_ids),
        }


class HFGenerateRunner:
    """transformers on the same model and inputs: vision, decoder prefill, TTFT and ``generate()`` end to end.

    ``static=True`` uses ``cache_implementation="static"`` (transformers compiles the decode step
    automatically; the first, warm-up call pays the compilation). Decode per token is derived as
    ``(generate(n) - generate(1)) / (n - 1)``.
    """

    def __init__(self, model: Any, inputs: dict[str, Any], new_tokens: int, label: str, *, static: bool = False) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.inputs = inputs
        self.new_tokens = new_tokens
        self.label = label
        self.static = static
        self.device = next(model.parameters()).device

    def _now(self) -> float:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _generate(self, n: int) -> Any:
        kwargs: dict[str, Any] = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False)
        if self.static:
            kwargs["cache_implementation"] = "static"
        return self.model.generate(**self.inputs, **kwargs)

    def run_once(self) -> dict[str, Any]:
        torch = self.torch
        cfg = self.model.config
        llava = self.model.model
        with torch.no_grad():
            t0 = self._now()
            feats = llava.get_image_features(
                pixel_values=self.inputs["pixel_values"],
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                return_dict=True,
            ).pooler_output
            t_vision = self._now() - t0
            feats = torch.cat(list(feats), dim=0) if isinstance(feats, (list, tuple)) else feats
            ids = self.inputs["input_ids"]
            embeds = llava.language_model.embed_tokens(ids)
            mask = (ids == cfg.image_token_id).unsqueeze(-1).expand_as(embeds)
            embeds = embeds.masked_scatter(mask, feats.to(embeds.dtype))
            t0 = self._now()
            out = llava.language_model(inputs_embeds=embeds, use_cache=True)
            self.model.lm_head(out.last_hidden_state[:, -1:])
            t_prefill = self._now() - t0
            t0 = self._now()
            self._generate(1)
            t_ttft = self._now() - t0
            t0 = self._now()
            gen = self._generate(self.new_tokens)
            t_total = self._now() - t0
        n = gen.shape[1] - ids.shape[1]
        per_token = (t_total - t_ttft) / max(1, n - 1)
        return {
            "vision": t_vision,
            "prefill": t_prefill,
            "ttft": t_ttft,
            "total": t_total,
            "decode": [per_token] * max(0, n - 1),
            "tokens": n,
        }
