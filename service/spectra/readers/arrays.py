"""Plain arrays from pipelines that do not write FITS: JSON documents and ``.npy`` files.

JSON: ``{"wavelength": [...], "flux": [...], "ivar" | "error": [...], "mask": [...],
"object_id": "..."}`` (``ivar`` and ``error`` optional and exclusive, ``mask`` true = bad), or
``{"spectra": [<that>, ...]}`` for several. Wavelengths are vacuum Å.

``.npy``: numeric only, never pickles. Either a ``(k, N)`` array whose rows are wavelength,
flux[, ivar[, mask]] for k = 2, 3, 4, or a 1D structured array with named fields
(``wavelength``/``wave``, ``flux``, optional ``ivar``/``error``/``mask``). The header's declared
shape and dtype are checked against the bytes present *before* ``np.load`` builds anything.
"""

from __future__ import annotations

import io
import json

try:  # a runtime dependency of the service; ~5x faster than json on arrays of numbers
    import orjson
except ImportError:  # pragma: no cover
    orjson = None
from typing import Any

import numpy as np

from service.io.source import Source, npy_header

from ..errors import SpectrumError
from ..registry import register_reader
from ..spectrum import Spectrum, make_spectrum

NPY_MAGIC = b"\x93NUMPY"
MAX_JSON_DEPTH = 8  # {"spectra": [{"flux": [..]}]} needs 4; deeper is not ours


def looks_like_json(data: bytes | memoryview) -> bool:
    """A JSON object: first non-blank byte ``{`` (what this reader takes as JSON; the API's
    JSON memory budget asks the same question before anything is parsed)."""
    return bytes(data[:64]).lstrip()[:1] == b"{"


def identify_arrays(source: Source) -> bool:
    """``.npy`` magic, or a JSON object (first non-blank byte ``{``)."""
    return source.data[:6] == NPY_MAGIC or looks_like_json(source.data)


def _spectrum_from_mapping(d: Any, source: Source, index: int) -> Spectrum:
    if not isinstance(d, dict):
        raise SpectrumError("bad_request", f"spectrum {index} is not an object",
                            source=source.name)
    wave = d.get("wavelength", d.get("wave"))
    if wave is None or d.get("flux") is None:  # "flux": null is as absent as no key
        raise SpectrumError("missing_column", f"spectrum {index} needs 'wavelength' and 'flux'",
                            source=source.name)
    if d.get("ivar") is not None and d.get("error") is not None:
        raise SpectrumError("bad_request", "give 'ivar' or 'error', not both", source=source.name)
    arrays = {}
    for key in ("wavelength", "flux", "ivar", "error", "mask"):
        value = wave if key == "wavelength" else d.get(key)
        if value is None:
            continue
        if not isinstance(value, (list, np.ndarray)):
            raise SpectrumError("bad_shape", f"{key!r} must be an array", source=source.name)
        try:
            arr = np.asarray(value, dtype=bool if key == "mask" else None)
        except (ValueError, TypeError, OverflowError):
            raise SpectrumError("bad_shape", f"{key!r} is not a flat numeric array",
                                source=source.name) from None
        if arr.dtype.kind == "O" or arr.dtype.kind in "USV":
            raise SpectrumError("bad_dtype", f"{key!r} is not numeric", source=source.name)
        arrays[key] = arr
    ivar = arrays.get("ivar")
    if "error" in arrays:
        err = arrays["error"]
        if err.dtype.kind not in "fiu":
            raise SpectrumError("bad_dtype", "'error' is not numeric", source=source.name)
        err = err.astype(np.float64)
        with np.errstate(all="ignore"):
            ivar = np.where(err > 0, 1.0 / (err * err), 0.0)
    meta = {"survey": str(d.get("survey", "arrays")), "object_id": str(d.get("object_id", ""))}
    return make_spectrum(arrays["wavelength"], arrays["flux"], ivar, arrays.get("mask"), meta,
                         source=source.name)


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth_ok(text: bytes) -> bool:
    """Cheap nesting bound before parsing (deep nesting is a recursion bomb). The structure
    sits at the front and arrays of numbers are flat, so the brackets of the first 4 kB —
    pulled out in C by ``translate`` — are few for any real document."""
    depth = deepest = 0
    for b in text[:4096].translate(None, _NOT_BRACKETS):
        if b in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest <= MAX_JSON_DEPTH


def _loads(data: bytes):
    """orjson when it parses the document; the stdlib for what it refuses but Python's json
    accepts (NaN/Infinity literals, which pipelines do write)."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def _read_json(source: Source) -> list[Spectrum]:
    if not _depth_ok(source.data):
        raise SpectrumError("bad_request", "JSON nested too deeply", source=source.name)
    try:
        doc = _loads(source.data)
    except (ValueError, RecursionError) as exc:
        raise SpectrumError("corrupt_file", f"invalid JSON: {exc}", source=source.name) from None
    if not isinstance(doc, dict):
        raise SpectrumError("bad_request", "JSON must be an object", source=source.name)
    if "spectra" in doc:
        items = doc["spectra"]
        if not isinstance(items, list):
            raise SpectrumError("bad_request", "'spectra' must be a list", source=source.name)
        return [_spectrum_from_mapping(d, source, i) for i, d in enumerate(items)]
    return [_spectrum_from_mapping(doc, source, 0)]


def _npy_header(source: Source) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shared, size-checked npy header, plus this reader's dtype policy (numeric or a
    structured array of numeric fields)."""
    shape, dtype, offset = npy_header(source, SpectrumError)
    if dtype.names is None and dtype.kind not in "fiub":
        raise SpectrumError("bad_dtype", f"npy dtype {dtype} is not numeric", source=source.name)
    if dtype.names is not None and any(dtype[n].kind not in "fiub" for n in dtype.names):
        raise SpectrumError("bad_dtype", "npy structured fields must be numeric",
                            source=source.name)
    return shape, dtype, offset


def _read_npy(source: Source) -> list[Spectrum]:
    shape, dtype, _ = _npy_header(source)
    arr = np.load(io.BytesIO(source.data), allow_pickle=False)
    if dtype.names is not None:
        names = {n.lower(): n for n in dtype.names}
        if arr.ndim != 1:
            raise SpectrumError("bad_shape", "structured npy must be 1D", source=source.name)
        d = {k: arr[names[k]] for k in ("wavelength", "wave", "flux", "ivar", "error", "mask")
             if k in names}
        if "mask" in d:
            d["mask"] = d["mask"] != 0
        return [_spectrum_from_mapping(d, source, 0)]
    if arr.ndim != 2 or arr.shape[0] not in (2, 3, 4):
        raise SpectrumError("bad_shape", f"npy array has shape {shape}; expected (2|3|4, N)",
                            source=source.name)
    mask = arr[3] != 0 if arr.shape[0] == 4 else None
    ivar = arr[2] if arr.shape[0] >= 3 else None
    meta = {"survey": "arrays", "object_id": ""}
    return [make_spectrum(arr[0], arr[1], ivar, mask, meta, source=source.name)]


def read_arrays(source: Source) -> list[Spectrum]:
    if source.data[:6] == NPY_MAGIC:
        return _read_npy(source)
    return _read_json(source)


register_reader("arrays", identify_arrays, read_arrays, priority=0,
                description="JSON or .npy arrays (wavelength, flux, ivar|error, mask)")
