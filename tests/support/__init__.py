"""Helpers the tests (and the benchmarks) share, imported as ``tests.support.X``.

Tiny models, file writers, the HTTP service fixtures, the one load generator, and the small
scripts the tests run as processes (``python -m tests.support.X`` from the repository root).
Nothing here is collected as a test; conftest.py files keep only fixtures and import from here.
"""
