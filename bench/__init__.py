"""Benchmarks: each measures ours against a reference in the same run and prints both."""
