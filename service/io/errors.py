"""The base of every typed input error, whatever the kind of record, and the codes that the
shared input handling (:mod:`.source`, :mod:`.fitsview`, :mod:`.registry`) raises.

Every failure carries a stable machine-readable ``code`` so that the HTTP layer, the CLI
(`specula inspect`) and the archive job can report it without parsing messages. Each kind
derives its own error from :class:`InputError` with its own code table (``SpectrumError``:
``service.spectra.errors``; ``LightconeError``: ``service.lightcones.errors``); a code shared
between tables means the same thing in each. The API maps every ``InputError`` code to an HTTP
status in one table (service/api/errors.py). Codes are public API: add, never rename.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

# code -> short human description (documented in the README's error table): what the shared
# input handling raises, and the codes every kind's table takes from here
ERROR_CODES: dict[str, str] = {
    "unknown_format": "no registered reader identifies the input",
    "ambiguous_format": "two readers of equal priority identify the input",
    "corrupt_file": "the bytes are not a valid file of the format they claim",
    "missing_hdu": "a FITS extension the format requires is absent",
    "missing_column": "a column the format requires is absent",
    "bad_shape": "arrays have inconsistent or unexpected shapes",
    "bad_dtype": "an array has a non-numeric or unsupported dtype",
    "bad_units": "units are missing or not convertible to the expected ones",
    "no_grid_overlap": "the input does not overlap the model's grid",
    "too_large": "the input (or a size it declares) exceeds a configured limit",
    "decompression_bomb": "compressed input expands beyond the configured limit",
    "bad_request": "the request itself is malformed",
    "file_not_found": "no file at the path given (command line and archive job)",
    "not_a_file": "the path is a directory or another non-regular file (command line)",
}


class InputError(ValueError):
    """Bad input bytes, with a stable ``code`` from the class's ``codes`` table."""

    codes: ClassVar[Mapping[str, str]] = ERROR_CODES
    what: ClassVar[str] = ""  # "lightcone " in "unregistered lightcone error code"

    def __init__(self, code: str, detail: str, *, source: str | None = None) -> None:
        if code not in self.codes:
            raise ValueError(f"unregistered {self.what}error code {code!r}")
        self.code = code
        self.detail = detail
        self.source = source
        super().__init__(f"[{code}] {detail}" + (f" ({source})" if source else ""))

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "detail": self.detail}
        if self.source:
            out["source"] = self.source
        return out
