"""``.npy`` cubes: numeric 3D arrays (n_x, n_y, n_los), never pickles.

The npy header's declared shape and dtype are validated against the bytes actually present
(and the float32 size against the source's limit) *before* ``np.load`` builds anything; a
``.npy`` carries no axes, so redshifts and cell size come from the caller (query parameters in
the API) or the cube must already be on the model's grid.
"""

from __future__ import annotations

import math

import numpy as np

from service.io.source import Source
from service.io.source import npy_header as shared_npy_header

from ..errors import LightconeError
from ..lightcone import Lightcone, check_cube_size, make_lightcone
from ..registry import register_reader

NPY_MAGIC = b"\x93NUMPY"


def identify_npy(source: Source) -> bool:
    return source.data[:6] == NPY_MAGIC


def npy_header(source: Source) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shared, size-checked npy header (service.io.source.npy_header) with the cube
    policy: a plain numeric dtype, and the cube's rank and size checked before anything else."""
    shape, dtype, offset = shared_npy_header(
        source, LightconeError,
        check_shape=lambda shape: check_cube_size(shape, source.max_bytes, source=source.name))
    if dtype.names is not None or dtype.kind not in "fiu":
        raise LightconeError("bad_dtype", f"npy dtype {dtype} is not a plain numeric type",
                             source=source.name)
    return shape, dtype, offset


def read_npy(source: Source) -> Lightcone:
    shape, dtype, offset = npy_header(source)
    cube = np.frombuffer(source.data, dtype=dtype, count=math.prod(shape), offset=offset)
    return make_lightcone(cube.reshape(shape), meta={"format": "npy"}, source=source.name)


register_reader("npy", identify_npy, read_npy, priority=0,
                description=".npy float/int cube (n_x, n_y, n_los), no pickle")
