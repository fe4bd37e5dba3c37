"""Benchmarks: run by hand (`make bench`), never in CI; results in RESULTS.md."""
