"""The benchmark harness measured against a fake runner whose latencies are known."""

import time

import pytest

from topv.profiling.harness import PeakSampler, measure, percentile, summarize


class FakeRunner:
    """Reports known stage durations, a different one per call (call ``c`` takes ``c`` extra microseconds, so the
    stats show which calls were measured); the first ``slow_calls`` calls are 10x slower and sleep their vision time
    (they must land in warm-up, which the harness times on the wall clock)."""

    label = "fake"

    def __init__(self, vision=0.02, decode=0.004, tokens=5, slow_calls=2):
        self.vision, self.decode, self.tokens, self.slow_calls = vision, decode, tokens, slow_calls
        self.calls = 0

    def run_once(self):
        self.calls += 1
        slow = self.calls <= self.slow_calls
        factor, extra = (10 if slow else 1), self.calls * 1e-6
        if slow:
            time.sleep(self.vision * factor)
        vision = self.vision * factor + extra
        decode = [self.decode * factor + extra] * (self.tokens - 1)
        return {"vision": vision, "decode": decode, "total": vision + sum(decode), "prune": None, "tokens": self.tokens}


def test_warmup_is_excluded_and_stages_are_recovered():
    runner = FakeRunner()
    m = measure(runner, warmup=2, repeats=4)
    assert runner.calls == 6
    stats = m.stats()
    assert stats["vision"]["n"] == 4
    # calls 3..6 are measured (20.003..20.006 ms); the 10x-slow warm-up calls (200 ms) are not
    assert stats["vision"]["min_ms"] == pytest.approx(20.003) and stats["vision"]["max_ms"] == pytest.approx(20.006)
    assert stats["vision"]["p50_ms"] == pytest.approx(20.0045)
    assert stats["decode_per_token"]["n"] == 4 * 4
    assert stats["decode_per_token"]["p50_ms"] == pytest.approx(4.0045)
    assert stats["decode_total"]["n"] == 4 and stats["decode_total"]["max_ms"] == pytest.approx(4 * 4.006)
    assert "prune" not in stats  # None stages are skipped
    assert m.tokens == [5, 5, 5, 5]
    assert m.warmup_seconds >= 2 * 0.2  # the wall clock over the warm-up calls; sleep() never returns early
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
