"""Small helpers the readers share: header values to plain JSON-able metadata, typed
columns, the truncation warning."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.io.fitsview import BLOCK, HDU, Header
from service.io.source import Source

from ..errors import SpectrumError


def plain(value: Any) -> Any:
    """A numpy/FITS scalar as a plain JSON-able value (None for NaN or unsupported)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float)):
        return value
    return None


def header_meta(header: Header, keys: tuple[str, ...]) -> dict[str, Any]:
    """The given header keywords that are present, lower-cased, as plain values."""
    out: dict[str, Any] = {}
    for key in keys:
        value = plain(header.get(key))
        if value is not None and value != "":
            out[key.lower()] = value
    return out


def numeric_column(hdu: HDU, name: str, *, kinds: str = "fiu") -> np.ndarray:
    """A table column that must be numeric (``bad_dtype`` otherwise, e.g. a string column
    where a survey writes numbers), so later float()/int() never meet text or arrays."""
    arr = hdu.column(name)
    if arr.dtype.kind not in kinds:
        raise SpectrumError("bad_dtype", f"column {name!r} has dtype {arr.dtype}",
                            source=hdu.source)
    return arr


def truncation_warning(source: Source) -> str | None:
    """The warning for a FITS whose length is not a whole number of 2880-byte blocks: cut
    short, though the HDUs a reader needs were intact (HDUs are scanned only as far as a
    reader asks), so it reads; the result says so rather than answer as if it were whole."""
    if len(source.data) % BLOCK:
        return (f"file is {len(source.data)} bytes, not a whole number of 2880-byte FITS "
                "blocks: truncated?")
    return None
