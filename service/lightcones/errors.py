"""Typed errors for lightcone inputs: a :class:`SpectrumError` subclass with its own code table.

Why a subclass and not a second hierarchy: the API maps ``SpectrumError`` codes to HTTP
statuses in one table (``too_large`` → 413, ``unknown_format`` → 415, everything else 422), the
pipelines already catch it, and a client sees one error vocabulary whatever the input. The
codes shared with spectra keep their meaning; the few lightcone-only ones live here rather
than in ``service.spectra.errors`` so that the spectrum contract does not grow lightcone terms.
Codes are public API: add, never rename.
"""

from __future__ import annotations

from service.spectra.errors import ERROR_CODES as SPECTRUM_CODES
from service.spectra.errors import SpectrumError

_SHARED = ("unknown_format", "ambiguous_format", "corrupt_file", "bad_shape", "bad_dtype",
           "bad_units", "too_large", "decompression_bomb", "bad_request", "no_grid_overlap")

ERROR_CODES: dict[str, str] = {
    **{code: SPECTRUM_CODES[code] for code in _SHARED},
    "missing_dataset": "an HDF5 dataset or FITS keyword the format requires is absent",
    "bad_axis": "the line-of-sight axis (redshift/frequency) is not finite and monotonic",
    "non_finite": "the cube contains NaN or inf",
    "missing_axis": "the cube's line-of-sight axis or cell size is unknown and the cube is not "
                    "already on the model's grid",
    # HDF5 structures that would make the server open something other than the upload
    # (service/lightcones/readers/hdf5_guard.py); refused before any data is read
    "hdf5_external_link": "an HDF5 external (or user-defined) link names another file",
    "hdf5_external_storage": "an HDF5 dataset keeps its raw data in external files",
    "hdf5_virtual_dataset": "an HDF5 virtual dataset maps data from other files",
    "hdf5_bad_link": "an HDF5 soft link dangles, cycles or leaves the file's own objects",
    "hdf5_filter": "an HDF5 dataset uses a filter other than deflate/shuffle/fletcher32/lzf",
    "hdf5_too_complex": "the HDF5 file has more links than any lightcone writer produces",
}


class LightconeError(SpectrumError):
    """A bad input lightcone, with a stable ``code`` from :data:`ERROR_CODES`."""

    def __init__(self, code: str, detail: str, *, source: str | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unregistered lightcone error code {code!r}")
        self.code = code
        self.detail = detail
        self.source = source
        ValueError.__init__(self, f"[{code}] {detail}" + (f" ({source})" if source else ""))
