"""Spectrum records, readers and the canonical preprocessing.

Shared by the service and training; imports no web framework, no ONNX Runtime, no torch.
``Source`` is :mod:`service.io`'s (bytes in, safely, for every kind), named here because
``read_spectra`` reads one.
"""

from service.io.source import Source

from . import readers  # noqa: F401  (registers the readers)
from .errors import ERROR_CODES, SpectrumError
from .preprocess import DEFAULT_GRID, PREPROCESS_VERSION, LogLambdaGrid, Prepared, preprocess
from .registry import identify_format, read_spectra
from .registry import readers as list_readers
from .spectrum import Spectrum, make_spectrum

__all__ = [
    "DEFAULT_GRID", "ERROR_CODES", "PREPROCESS_VERSION", "LogLambdaGrid", "Prepared",
    "Source", "Spectrum", "SpectrumError", "identify_format", "list_readers", "make_spectrum",
    "preprocess", "read_spectra",
]
