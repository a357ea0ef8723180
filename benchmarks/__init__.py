"""Benchmarks (numbers, never asserted in tests)."""
