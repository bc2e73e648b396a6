"""The benchmark harness measured against a fake runner whose latencies are known."""

import time

import pytest

from topv.profiling.harness import PeakSampler, measure, percentile, summarize


class FakeRunner:
    """Sleeps known durations; the first `slow_calls` calls are 10x slower (they must land in warm-up)."""

    label = "fake"

    def __init__(self, vision=0.02, decode=0.004, tokens=5, slow_calls=2):
        self.vision, self.decode, self.tokens, self.slow_calls = vision, decode, tokens, slow_calls
        self.calls = 0

    def run_once(self):
        self.calls += 1
        factor = 10 if self.calls <= self.slow_calls else 1
        t0 = time.perf_counter()
        time.sleep(self.vision * factor)
        vision = time.perf_counter() - t0
        decode = []
        for _ in range(self.tokens - 1):
            t0 = time.perf_counter()
            time.sleep(self.decode * factor)
            decode.append(time.perf_counter() - t0)
        return {"vision": vision, "decode": decode, "total": vision + sum(decode), "prune": None, "tokens": self.tokens}


def test_warmup_is_excluded_and_stages_are_recovered():
    runner = FakeRunner()
    m = measure(runner, warmup=2, repeats=4)
    assert runner.calls == 6
    stats = m.stats()
    assert stats["vision"]["n"] == 4
    # sleep() never returns early; the scheduler may add a little.
    assert 20.0 <= stats["vision"]["p50_ms"] < 35.0
    assert stats["vision"]["max_ms"] < 100.0  # the 10x-slow warm-up calls (200 ms) are not measured
    assert stats["decode_per_token"]["n"] == 4 * 4
    assert 4.0 <= stats["decode_per_token"]["p50_ms"] < 15.0
    assert stats["decode_total"]["n"] == 4
    assert "prune" not in stats  # None stages are skipped
    assert m.tokens == [5, 5, 5, 5]
    assert m.warmup_seconds >= 2 * (0.2 + 4 * 0.04)
    assert m.peak_host_rss_bytes is None or m.peak_host_rss_bytes > 0


def test_percentiles_and_summary():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    s = summarize([0.001, 0.002, 0.003, 0.004])
    assert s["p50_ms"] == pytest.approx(2.5) and s["min_ms"] == pytest.approx(1.0) and s["n"] == 4
    with pytest.raises(ValueError):
        percentile([], 50)


def test_peak_sampler_keeps_the_maximum():
    values = iter([5, 9, 3] + [1] * 10000)
    with PeakSampler(lambda: next(values), interval=0.001) as sampler:
        time.sleep(0.02)
    assert sampler.peak == 9


def test_bad_arguments():
    with pytest.raises(ValueError):
        measure(FakeRunner(), warmup=0, repeats=0)
