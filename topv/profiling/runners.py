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
    """transformers on the same model and inputs: vision, prefill, TTFT and ``generate()`` end to end.

    ``static=True`` uses ``cache_implementation="static"`` (transformers compiles the decode step
    automatically on CUDA; the first, warm-up call pays the compilation). ``prefill`` is one forward pass over
    the prompt minus the vision tower's time. ``ttft`` and the decode step times come from one ``generate()``
    of ``new_tokens`` tokens: a streamer notes when each new token reaches the host (transformers copies every
    token to the host anyway to decide whether to stop, so this adds no synchronization). One call per run, so
    the static cache has one length and compiles once. ``ttft`` and ``total`` include preprocessing
    (``encode``), as topv's do.
    """

    def __init__(self, model: Any, inputs: dict[str, Any], new_tokens: int, label: str, *, static: bool = False,
                 encode: Any = None) -> None:
        import torch

        from topv.reference.loading import model_family

        self.torch = torch
        self.model = model
        self.family = model_family(model)
        self.inputs = inputs
        self.new_tokens = new_tokens
        self.label = label
        self.static = static
        self.encode = encode or (lambda: inputs)
        self.device = next(model.parameters()).device

    def _generate(self, n: int, streamer: Any) -> Any:
        kwargs: dict[str, Any] = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=streamer)
        if self.static:
            kwargs["cache_implementation"] = "static"
        return self.model.generate(**self.inputs, **kwargs)

    def run_once(self) -> dict[str, Any]:
        from topv.reference.pipeline import device_now

        with self.torch.no_grad():
            t0 = device_now(self.device)
            self.family.image_features(self.model, self.inputs)
            t_vision = device_now(self.device) - t0
            t0 = device_now(self.device)
            self.model(**self.inputs, use_cache=True)
            t_forward = device_now(self.device) - t0
            stamps = TokenTimes()
            t0 = device_now(self.device)
            self.encode()
            gen = self._generate(self.new_tokens, stamps)
            t_total = device_now(self.device) - t0
        n = gen.shape[1] - self.inputs["input_ids"].shape[1]
        new = stamps.times[1:]  # the first put() is the prompt
        if len(new) != n:
            raise RuntimeError(f"generate() streamed {len(new)} new tokens and returned {n}")
        return {"vision": t_vision, "prefill": max(0.0, t_forward - t_vision), "ttft": new[0] - t0, "total": t_total,
                "decode": [b - a for a, b in zip(new, new[1:])], "tokens": n}


class TokenTimes:
    """A ``generate()`` streamer that records when each ``put()`` (the prompt, then each new token) arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass
