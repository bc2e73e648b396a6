"""The measurement harness: warm-up separated from measurement, per-stage statistics, peak memory.

A *runner* is anything with ``run_once() -> dict`` returning seconds per stage (a float, or a list of
floats for per-token stages such as ``decode``) and ``sync()`` which waits for queued device work. The
harness times nothing itself: runners time their own stages (with device synchronization), so that the
same statistics serve ONNX Runtime, TensorRT, PyTorch and transformers' ``generate()``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from topv.memory import PeakSampler, host_rss


class Runner(Protocol):
    label: str

    def run_once(self) -> dict[str, Any]: ...


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of a non-empty list."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of an empty list")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: list[float]) -> dict[str, float]:
    """p50/p90/p99, mean, std, min, max and count of a list of seconds, reported in milliseconds."""
    ms = [v * 1e3 for v in values]
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms),
        "std_ms": statistics.pstdev(ms) if len(ms) > 1 else 0.0,
        "min_ms": min(ms),
        "max_ms": max(ms),
        "n": len(ms),
    }


@dataclass
class Measurement:
    """Per-stage samples of the measured (not warm-up) runs."""

    label: str
    stages: dict[str, list[float]] = field(default_factory=dict)
    per_token: dict[str, list[float]] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)
    peak_host_rss_bytes: int | None = None
    peak_gpu_bytes: int | None = None
    warmup_seconds: float = 0.0

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: summarize(v) for name, v in self.stages.items() if v}
        for name, v in self.per_token.items():
            if v:
                out[f"{name}_per_token"] = summarize(v)
        return out


def measure(runner: Runner, *, warmup: int = 2, repeats: int = 5, gpu_probe: Callable[[], int | None] | None = None) -> Measurement:
    """Run ``warmup`` untimed runs, then ``repeats`` measured runs; collect every stage's samples.

    Float stages become one sample per run; list stages (``decode``) contribute every element to the
    per-token samples and their sum to a per-run ``<stage>_total`` sample. ``tokens`` (an int) is the
    number of generated tokens of each run.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    t0 = time.perf_counter()
    for _ in range(warmup):
        runner.run_once()
    result = Measurement(runner.label, warmup_seconds=time.perf_counter() - t0)
    host, gpu = PeakSampler(host_rss), PeakSampler(gpu_probe)
    with host, gpu:
        for _ in range(repeats):
            for name, value in runner.run_once().items():
                if name == "tokens":
                    result.tokens.append(int(value))
                elif isinstance(value, list):
                    result.per_token.setdefault(name, []).extend(value)
                    result.stages.setdefault(f"{name}_total", []).append(sum(value))
                elif value is not None:
                    result.stages.setdefault(name, []).append(float(value))
    result.peak_host_rss_bytes = host.peak
    result.peak_gpu_bytes = gpu.peak
    return result
