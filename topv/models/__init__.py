"""Model families topv supports, their geometry, and random-weight model builders for tests/benchmarks."""
