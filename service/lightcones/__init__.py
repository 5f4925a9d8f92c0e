"""Lightcone records, readers and the canonical preprocessing (shared by service and training).

Imports no web framework, no ONNX Runtime, no torch. Input bytes come in through the same
:class:`~service.io.source.Source` as spectra (size limit, bounded gunzip, checked FITS).
"""

from service.io.source import Source

from . import readers  # noqa: F401  (registers the readers)
from .errors import ERROR_CODES, LightconeError
from .lightcone import NU21_MHZ, Lightcone, make_lightcone
from .preprocess import (
    PREPROCESS_VERSION,
    PREPROCESS_VERSIONS,
    LightconeGrid,
    Prepared,
    PreparedPatches,
    SkyPatches,
    preprocess,
    preprocess_patches,
    resample,
    resample_patches,
)
from .registry import identify_format, read_lightcone
from .registry import readers as list_readers

__all__ = [
    "ERROR_CODES", "NU21_MHZ", "PREPROCESS_VERSION", "PREPROCESS_VERSIONS", "Lightcone",
    "LightconeError",
    "LightconeGrid", "Prepared", "PreparedPatches", "SkyPatches", "Source", "identify_format",
    "list_readers", "make_lightcone", "preprocess", "preprocess_patches", "read_lightcone",
    "resample", "resample_patches",
]
