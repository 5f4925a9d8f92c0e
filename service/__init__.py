"""Specula: probabilistic inference for astronomical survey pipelines."""

__version__ = "0.1.0"
