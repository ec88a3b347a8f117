"""Benchmarks run by ``flashsale bench`` (``flashsale bench core``: the C++ primitives)."""
