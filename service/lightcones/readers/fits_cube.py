"""FITS image cubes, the radio-astronomy convention: NAXIS1/2 on the sky, NAXIS3 along the line
of sight (``CTYPE3`` = ``FREQ`` in Hz, or ``REDSHIFT``/``Z``).

The cube is the first HDU with NAXIS = 3 (a degenerate 4th Stokes axis of length 1 is
accepted). Sizes are checked by the shared fast FITS view before any array exists; the data
are a zero-copy view until the float32 conversion. ``BUNIT`` K, mK or uK is converted to mK
(missing: assumed mK). The transverse cell size is ``|CDELT1|`` when ``CUNIT1`` is Mpc (or the
``CELLMPC`` keyword); angular axes would need a cosmology and are left as unknown.
"""

from __future__ import annotations

import numpy as np

from service.io.source import Source

from ..errors import LightconeError
from ..lightcone import Lightcone, check_cube_size, make_lightcone
from ..registry import register_reader

UNIT_TO_MK = {"mk": 1.0, "k": 1e3, "uk": 1e-3, "microk": 1e-3}


def _cube_hdu(source: Source):
    for hdu in source.fits.hdus:
        if hdu.xtension not in ("PRIMARY", "IMAGE") or hdu.is_compressed:
            continue
        shape = hdu.shape
        if len(shape) == 4 and shape[0] == 1:
            return hdu, shape[1:]
        if len(shape) == 3:
            return hdu, shape
    return None, None


def identify_fits_cube(source: Source) -> bool:
    if not source.is_fits:
        return False
    hdu, _ = _cube_hdu(source)
    return hdu is not None


def _axis(h, n: int, source: Source) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(redshifts, frequencies MHz) of the 3rd FITS axis from its WCS keywords."""
    ctype = str(h.get("CTYPE3", "")).strip().upper()
    crval, cdelt, crpix = h.get("CRVAL3"), h.get("CDELT3"), h.get("CRPIX3", 1.0)
    if not ctype or crval is None or cdelt is None:
        return None, None
    try:
        values = float(crval) + (np.arange(n, dtype=np.float64) + 1.0 - float(crpix)) * float(cdelt)
    except (TypeError, ValueError):
        raise LightconeError("bad_axis", "CRVAL3/CDELT3/CRPIX3 are not numbers",
                             source=source.name) from None
    if ctype.startswith("FREQ"):
        unit = str(h.get("CUNIT3", "Hz")).strip().lower()
        scale = {"hz": 1e-6, "khz": 1e-3, "mhz": 1.0, "ghz": 1e3}.get(unit)
        if scale is None:
            raise LightconeError("bad_units", f"CUNIT3 = {unit!r}", source=source.name)
        return None, values * scale
    if ctype in ("REDSHIFT", "Z", "ZOPT"):
        return values, None
    raise LightconeError("bad_axis", f"CTYPE3 = {ctype!r}: expected FREQ or REDSHIFT",
                         source=source.name)


def read_fits_cube(source: Source) -> Lightcone:
    hdu, shape = _cube_hdu(source)
    if hdu is None:
        raise LightconeError("bad_shape", "no 3D image HDU", source=source.name)
    nz, ny, nx = shape  # numpy order: NAXIS3 (line of sight) slowest
    check_cube_size((nx, ny, nz), source.max_bytes, source=source.name)
    h = hdu.header
    unit = str(h.get("BUNIT", "mK")).strip().lower()
    if unit not in UNIT_TO_MK:
        raise LightconeError("bad_units", f"BUNIT = {unit!r}; expected K, mK or uK",
                             source=source.name)
    data = hdu.image().reshape(nz, ny, nx)
    if data.dtype.kind not in "fiu":
        raise LightconeError("bad_dtype", f"image dtype {data.dtype}", source=source.name)
    cube = np.empty((nx, ny, nz), dtype=np.float32)  # one allocation: convert + transpose
    cube[...] = data.transpose(2, 1, 0)
    if UNIT_TO_MK[unit] != 1.0:
        cube = cube * np.float32(UNIT_TO_MK[unit])
    z, nu = _axis(h, nz, source)
    cell = h.get("CELLMPC")
    if cell is None and str(h.get("CUNIT1", "")).strip().lower() == "mpc":
        cell = abs(float(h.get("CDELT1", 0.0))) or None
    meta = {"format": "fits-cube", "hdu": hdu.index, "bunit": unit}
    return make_lightcone(cube, z, cell, meta, frequencies_mhz=nu, source=source.name)


register_reader("fits-cube", identify_fits_cube, read_fits_cube, priority=0,
                description="FITS image cube (x, y, FREQ|REDSHIFT), BUNIT K/mK/uK")
