"""One typed error for everything that can be wrong with an input spectrum.

Every failure carries a stable machine-readable ``code`` so that the HTTP layer, the CLI
(`specula inspect`) and the archive job can report it without parsing messages. The codes
are part of the public API: add new ones, never rename.
"""

from __future__ import annotations

# code -> short human description (documented in the README's error table)
ERROR_CODES: dict[str, str] = {
    "unknown_format": "no registered reader identifies the input",
    "ambiguous_format": "two readers of equal priority identify the input",
    "corrupt_file": "the bytes are not a valid file of the format they claim",
    "missing_hdu": "a FITS extension the format requires is absent",
    "missing_column": "a column the format requires is absent",
    "bad_shape": "arrays have inconsistent or unexpected shapes",
    "bad_dtype": "an array has a non-numeric or unsupported dtype",
    "bad_units": "units are missing or not convertible to the expected ones",
    "non_finite": "wavelengths contain NaN or inf",
    "wavelength_not_increasing": "wavelengths are not strictly increasing",
    "empty_spectrum": "the spectrum has no pixels or no good pixels",
    "no_grid_overlap": "the spectrum does not overlap the model's wavelength grid",
    "insufficient_coverage": "the spectrum covers too little of the model's grid, or has too "
                             "few good pixels on it, to be classified",
    "too_large": "the input (or a size it declares) exceeds a configured limit",
    "decompression_bomb": "compressed input expands beyond the configured limit",
    "bad_request": "the request itself is malformed",
    "file_not_found": "no file at the path given (command line and archive job)",
    "not_a_file": "the path is a directory or another non-regular file (command line)",
    "empty_file": "the file (or upload) has no bytes at all",
}


class SpectrumError(ValueError):
    """A bad input spectrum, with a stable ``code`` from :data:`ERROR_CODES`."""

    def __init__(self, code: str, detail: str, *, source: str | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unregistered error code {code!r}")
        self.code = code
        self.detail = detail
        self.source = source
        super().__init__(f"[{code}] {detail}" + (f" ({source})" if source else ""))

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "detail": self.detail}
        if self.source:
            out["source"] = self.source
        return out
