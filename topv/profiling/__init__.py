"""Latency and memory profiling: a tested harness (`harness`), runners, and `topv-bench`."""
