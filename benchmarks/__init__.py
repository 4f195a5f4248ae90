"""Benchmark scripts: each measures something and writes a section of BENCHMARKS.md."""
