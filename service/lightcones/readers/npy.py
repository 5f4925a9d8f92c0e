"""``.npy`` cubes: numeric 3D arrays (n_x, n_y, n_los), never pickles.

The npy header's declared shape and dtype are validated against the bytes actually present
(and the float32 size against the source's limit) *before* ``np.load`` builds anything; a
``.npy`` carries no axes, so redshifts and cell size come from the caller (query parameters in
the API) or the cube must already be on the model's grid.
"""

from __future__ import annotations

import io
import math

import numpy as np

from service.spectra.source import Source

from ..errors import LightconeError
from ..lightcone import Lightcone, check_cube_size, make_lightcone
from ..registry import register_reader

NPY_MAGIC = b"\x93NUMPY"


def identify_npy(source: Source) -> bool:
    return source.data[:6] == NPY_MAGIC


def npy_header(source: Source) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset), every declared size checked against the bytes present."""
    f = io.BytesIO(source.data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy version {version}")
    except (ValueError, SyntaxError, TypeError, OverflowError, EOFError) as exc:
        raise LightconeError("corrupt_file", f"bad npy header: {exc}", source=source.name) from None
    if dtype.hasobject or dtype.names is not None or dtype.kind not in "fiu":
        raise LightconeError("bad_dtype", f"npy dtype {dtype} is not a plain numeric type",
                             source=source.name)
    check_cube_size(tuple(shape), source.max_bytes, source=source.name)
    offset = f.tell()
    expected = math.prod(shape) * dtype.itemsize
    present = len(source.data) - offset
    if expected != present:
        raise LightconeError("corrupt_file", f"npy declares {expected} data bytes; {present} "
                             "present", source=source.name)
    if fortran:
        # Legal, but we would have to copy to C order; a lightcone writer never needs it.
        raise LightconeError("bad_dtype", "Fortran-ordered npy not supported", source=source.name)
    return tuple(shape), dtype, offset


def read_npy(source: Source) -> Lightcone:
    shape, dtype, offset = npy_header(source)
    cube = np.frombuffer(source.data, dtype=dtype, count=math.prod(shape), offset=offset)
    return make_lightcone(cube.reshape(shape), meta={"format": "npy"}, source=source.name)


register_reader("npy", identify_npy, read_npy, priority=0,
                description=".npy float/int cube (n_x, n_y, n_los), no pickle")
