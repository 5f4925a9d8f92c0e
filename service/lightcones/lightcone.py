"""The in-memory lightcone record every reader returns and the preprocessing takes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import LightconeError

NU21_MHZ = 1420.405751768  # rest frequency of the 21cm line


@dataclass(frozen=True, slots=True, eq=False)
class Lightcone:
    """A 21cm brightness-temperature lightcone: two sky axes and one line-of-sight axis.

    ``cube`` is float32 (n_x, n_y, n_los) in mK. ``redshifts`` gives the redshift of each
    line-of-sight slice (increasing or decreasing, never flat) or is None when the input did
    not say (a bare ``.npy``); ``cell_mpc`` is the comoving transverse cell size, None when
    unknown. ``meta`` holds plain JSON-able values: format, the simulator's parameters when
    the file carries them (``params``), and anything else worth keeping.
    """

    cube: np.ndarray
    redshifts: np.ndarray | None
    cell_mpc: float | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.cube.shape)  # type: ignore[return-value]

    @property
    def frequencies_mhz(self) -> np.ndarray | None:
        """Observed 21cm frequency of each slice (MHz)."""
        return None if self.redshifts is None else NU21_MHZ / (1.0 + self.redshifts)

    @property
    def params(self) -> dict[str, float]:
        return dict(self.meta.get("params", {}))


def check_cube_size(shape: tuple[int, ...], max_bytes: int, *, source: str | None) -> None:
    """Refuse a declared shape before anything of that size is allocated.

    The rule is the same for every reader: the decoded float32 cube may not exceed the
    source's byte limit (compressed HDF5 or gzip can otherwise turn a small upload into a
    huge array)."""
    if len(shape) != 3:
        raise LightconeError("bad_shape", f"a lightcone is 3D (n_x, n_y, n_los); got shape "
                             f"{tuple(shape)}", source=source)
    if any(int(n) < 1 for n in shape):
        raise LightconeError("bad_shape", f"empty axis in shape {tuple(shape)}", source=source)
    size = math.prod(int(n) for n in shape) * 4
    if size > max_bytes:
        raise LightconeError("too_large", f"cube {tuple(shape)} is {size} bytes as float32 > "
                             f"limit {max_bytes}", source=source)


def make_lightcone(cube: Any, redshifts: Any | None = None, cell_mpc: float | None = None,
                   meta: dict[str, Any] | None = None, *, frequencies_mhz: Any | None = None,
                   source: str | None = None) -> Lightcone:
    """Validate arrays and build a :class:`Lightcone` (one constructor: one set of checks).

    Give the line-of-sight axis as ``redshifts`` or ``frequencies_mhz`` (not both). Non-finite
    cells are an error, not masked: a simulated or foreground-cleaned cube has none, and a
    regressor has no mask channel to learn from."""
    arr = np.asarray(cube)
    if arr.dtype.kind not in "fiu":
        raise LightconeError("bad_dtype", f"cube has dtype {arr.dtype}", source=source)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise LightconeError("bad_shape", f"a lightcone is 3D (n_x, n_y, n_los); got shape "
                             f"{arr.shape}", source=source)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise LightconeError("non_finite", "cube contains NaN or inf", source=source)
    if redshifts is not None and frequencies_mhz is not None:
        raise LightconeError("bad_request", "give redshifts or frequencies, not both",
                             source=source)
    z = None
    if frequencies_mhz is not None:
        nu = np.asarray(frequencies_mhz, dtype=np.float64).reshape(-1)
        if not (np.isfinite(nu).all() and (nu > 0).all()):
            raise LightconeError("bad_axis", "frequencies must be finite and > 0", source=source)
        z = NU21_MHZ / nu - 1.0
    elif redshifts is not None:
        z = np.asarray(redshifts, dtype=np.float64).reshape(-1)
    if z is not None:
        if z.shape[0] != arr.shape[2]:
            raise LightconeError("bad_shape", f"{z.shape[0]} line-of-sight values for "
                                 f"{arr.shape[2]} slices", source=source)
        if not np.isfinite(z).all() or (z <= -1).any():
            raise LightconeError("bad_axis", "redshifts must be finite and > -1", source=source)
        if z.shape[0] > 1:
            d = np.diff(z)
            if not ((d > 0).all() or (d < 0).all()):
                raise LightconeError("bad_axis", "line-of-sight axis is not strictly monotonic",
                                     source=source)
    if cell_mpc is not None:
        cell_mpc = float(cell_mpc)
        if not (math.isfinite(cell_mpc) and cell_mpc > 0):
            raise LightconeError("bad_units", f"cell size {cell_mpc} Mpc", source=source)
    return Lightcone(cube=arr, redshifts=z, cell_mpc=cell_mpc, meta=dict(meta or {}))
