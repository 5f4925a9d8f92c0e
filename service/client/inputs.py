"""What a user hands the client → the bytes /v1 reads.

Spectra go up as multipart file parts, one per input, and the service's reader registry
identifies each: a path or ``bytes`` is sent as it is (SDSS, DESI, ESO, exposure, .npy, JSON,
gzipped or not); a specutils spectrum or a mapping of arrays (``wavelength``, ``flux``,
``ivar`` | ``error``, ``mask``, ``object_id``) becomes the JSON arrays document
(service/spectra/readers/arrays.py). A lightcone goes up as one raw body: a file's bytes, or
a numpy cube as raw float32 with ``?shape=``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from service.spectra.specutils_adapter import is_specutils_spectrum, spectrum_to_arrays

# one input: a path, a file's bytes, a specutils Spectrum/Spectrum1D, or a mapping of arrays
SpectrumInput = str | os.PathLike | bytes | Mapping[str, Any] | Any
Part = tuple[str, tuple[str, bytes, str]]  # httpx's multipart ("files", (name, data, type))
OCTET, JSON = "application/octet-stream", "application/json"


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def arrays_document(doc: Mapping[str, Any]) -> bytes:
    """A mapping of arrays as the arrays reader's JSON. NaN is written as JSON's ``NaN``
    literal, which the reader accepts (and masks)."""
    return json.dumps(_json_safe(doc)).encode()


def _one_part(item: SpectrumInput, i: int) -> Part:
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        return ("files", (path.name, path.read_bytes(), OCTET))
    if isinstance(item, (bytes, bytearray, memoryview)):
        return ("files", (f"upload-{i}", bytes(item), OCTET))
    if is_specutils_spectrum(item):
        doc = spectrum_to_arrays(item)
        name = doc.get("object_id") or f"spectrum-{i}"
        return ("files", (f"{name}.json", arrays_document(doc), JSON))
    if isinstance(item, Mapping):
        name = str(item.get("object_id") or f"arrays-{i}")
        return ("files", (f"{name}.json", arrays_document(item), JSON))
    raise TypeError(f"input {i}: {type(item).__name__} is not a path, bytes, a specutils "
                    "spectrum or a mapping of arrays")


def _is_single(inputs: Any) -> bool:
    return (isinstance(inputs, (str, os.PathLike, bytes, bytearray, memoryview, Mapping))
            or is_specutils_spectrum(inputs))


def spectrum_parts(inputs: SpectrumInput | Iterable[SpectrumInput]) -> list[Part]:
    """One multipart part per input; a single input needs no list around it."""
    items = [inputs] if _is_single(inputs) else list(inputs)
    if not items:
        raise ValueError("no spectrum to send")
    return [_one_part(item, i) for i, item in enumerate(items)]


def cube_body(cube: str | os.PathLike | bytes | np.ndarray) -> tuple[bytes, str, dict[str, str]]:
    """(body, file name, extra query) of a lightcone: a file as it is, or a numpy cube
    (n_x, n_y, n_los) in mK as raw little-endian float32 with its ``shape``."""
    if isinstance(cube, np.ndarray):
        if cube.ndim != 3:
            raise ValueError(f"a lightcone cube is 3-D (n_x, n_y, n_los), got shape {cube.shape}")
        raw = np.ascontiguousarray(cube, dtype="<f4")
        return raw.tobytes(), "array", {"shape": ",".join(map(str, raw.shape))}
    if isinstance(cube, (str, os.PathLike)):
        path = Path(cube)
        return path.read_bytes(), path.name, {}
    return bytes(cube), "body", {}
