"""Typed errors for lightcone inputs: an :class:`~service.io.errors.InputError` with its own code table.

Why the shared base: the API maps every ``InputError`` code to an HTTP status in one table
(``too_large`` → 413, ``unknown_format`` → 415, everything else 422), and a client sees one
error vocabulary whatever the input. The shared codes (``service.io.errors``) keep their
meaning; the lightcone-only ones live here, so that neither the shared table nor the spectrum
one grows lightcone terms. Codes are public API: add, never rename.
"""

from __future__ import annotations

from service.io.errors import ERROR_CODES as SHARED_CODES
from service.io.errors import InputError

_SHARED = ("unknown_format", "ambiguous_format", "corrupt_file", "bad_shape", "bad_dtype",
           "bad_units", "too_large", "decompression_bomb", "bad_request", "no_grid_overlap")

ERROR_CODES: dict[str, str] = {
    **{code: SHARED_CODES[code] for code in _SHARED},
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


class LightconeError(InputError):
    """A bad input lightcone, with a stable ``code`` from :data:`ERROR_CODES`."""

    codes = ERROR_CODES
    what = "lightcone "
