"""The typed error for everything that can be wrong with an input spectrum.

:class:`SpectrumError` is an :class:`~service.io.errors.InputError` with the spectrum code
table: the shared codes (``service.io.errors``) and the spectrum-only ones below. The codes
are part of the public API: add new ones, never rename.
"""

from __future__ import annotations

from service.io.errors import ERROR_CODES as SHARED_CODES
from service.io.errors import InputError

# code -> short human description (documented in the README's error table)
ERROR_CODES: dict[str, str] = {
    **SHARED_CODES,
    "no_grid_overlap": "the spectrum does not overlap the model's wavelength grid",
    "non_finite": "wavelengths contain NaN or inf",
    "wavelength_not_increasing": "wavelengths are not strictly increasing",
    "empty_spectrum": "the spectrum has no pixels or no good pixels",
    "insufficient_coverage": "the spectrum covers too little of the model's grid, or has too "
                             "few good pixels on it, to be classified",
    "empty_file": "the file (or upload) has no bytes at all",
}


class SpectrumError(InputError):
    """A bad input spectrum, with a stable ``code`` from :data:`ERROR_CODES`."""

    codes = ERROR_CODES
