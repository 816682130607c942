"""Benchmarks: synthetic workloads, measurements and peers."""
