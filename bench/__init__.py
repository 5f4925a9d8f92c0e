"""Specula's benchmarks: measurements, not tests (nothing here asserts).

A package so that the scripts run as ``python -m bench.X`` from the repository root and import
their shared pieces (bench/common.py, tests/support/loadgen.py) as packages, with no path
edits in code.
What each one measures and the reports it produced: bench/results/README.md.
"""
