"""SDSS ``spPlate-PLATE-MJD.fits`` (idlspec2d, DR1–DR16; 640 or 1000 fibres) → one
:class:`Spectrum` per fibre.

Layout (https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/PLATE4/spPlate.html,
and the writer, idlspec2d's ``spcoadd_v5.pro``). Every image is NFIBER rows of NPIX pixels
(NAXIS1 = NPIX, NAXIS2 = NFIBER):

- HDU0: flux [1e-17 erg/s/cm²/Å], float32; the header holds ``COEFF0``/``COEFF1``
  (log10 λ = COEFF0 + COEFF1·i, vacuum Å, one grid for every fibre), ``PLATEID``, ``MJD``;
- HDU1 ``IVAR``: inverse variance of the flux;
- HDU2 ``ANDMASK``: int32 SPPIXMASK bits set in every exposure;
- HDU3 ``ORMASK``, HDU4 ``WAVEDISP``: not read;
- HDU5 ``PLUGMAP``: binary table, one row per fibre (``FIBERID``, ``OBJTYPE``, ``RA``,
  ``DEC``, ``MAG``, ...); sky fibres have ``OBJTYPE = 'SKY'``;
- HDU6 ``SKY`` (the subtracted sky, v5 on; SDSS-I/II files have S/N vectors there): not read.

HDUs are taken by position, as SDSS documents them: files before v5 have no EXTNAMEs.

Bad pixels: exactly those of an SDSS spec file, by the same function
(:func:`.sdss_spec.and_mask_bad`: any and-mask bit; ``ivar == 0`` by ``make_spectrum``).
A fibre with no good pixel at all (broken, unplugged) is still returned: the service answers
it with its own ``empty_spectrum`` error in its place, under its id.

Ids: ``PLATE-MJD-FIBER`` from PLATEID/MJD (else the file name) and the plug map's FIBERID,
the id of the same fibre's ``spec-PLATE-MJD-FIBER.fits``.

Sky fibres are returned, flagged, not skipped: every row of the file comes back, so that
nothing accepted disappears and results stay one per fibre, joinable to the plug map by id.
SDSS's own redshift pipeline does the same (it fits every fibre and sets ZWARNING bit 0, SKY,
on sky fibres). Each sky fibre carries ``objtype = 'SKY'`` and a warning that says what it is;
its classification describes the sky-subtraction residual, and the quality flags (no_signal)
usually say so too. A pipeline that wants targets only drops rows with that warning.

Sizes: every HDU's declared size (BITPIX × NAXISn) is checked against the bytes present by
``fitsview`` before anything is viewed; here the images and the plug map must agree on
NFIBER × NPIX before any array is built, and pixels are converted a block of fibres at a time
(``make_spectra``), so nothing is allocated beyond the size of the input.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from service.io.fitsview import HDU, Header
from service.io.source import Source

from ..errors import SpectrumError
from ..registry import register_reader
from ..spectrum import Spectrum, make_spectra
from ._common import numeric_column, plain, truncation_warning
from .sdss_spec import and_mask_bad, plate_mjd_fiber
from .sdss_spspec import coeff_wavelength, is_eigen_template

_NAME = re.compile(r"spPlate-(\d{4,6})-(\d{5})")
_IVAR, _ANDMASK, _PLUGMAP = 1, 2, 5
SKY_WARNING = ("sky fibre (PLUGMAP OBJTYPE = 'SKY'): sky-subtracted background, no target; "
               "its classification describes the sky residual, not an object")


def identify_sdss_spplate(source: Source) -> bool:
    """A FITS whose primary is a 2D image with COEFF0/COEFF1 and no FIBERID (a per-fibre
    spSpec has one), not an eigen-template, followed by an image HDU (IVAR; spSpec's
    extensions are tables). The header tests come first so that spSpec files are never
    scanned past their primary HDU. The image's shape is checked by the reader: a plate
    whose IVAR disagrees is a malformed plate (``bad_shape``), not an spSpec to misread."""
    if not source.is_fits:
        return False
    primary = source.fits[0]
    h = primary.header
    if (len(primary.shape) != 2 or "COEFF0" not in h or "COEFF1" not in h or "FIBERID" in h
            or is_eigen_template(h)):
        return False
    hdu1 = source.fits.get(_IVAR)
    return hdu1 is not None and hdu1.xtension == "IMAGE"


def _required_image(source: Source, index: int, what: str, shape: tuple[int, ...]) -> HDU:
    hdu = source.fits.get(index)
    if hdu is None or hdu.xtension != "IMAGE":
        raise SpectrumError("missing_hdu", f"HDU{index} ({what}) is not an image",
                            source=source.name)
    if hdu.shape != shape:
        raise SpectrumError("bad_shape", f"{what} has shape {hdu.shape}, flux {shape}",
                            source=source.name)
    return hdu


def _plate_mjd(source: Source, h: Header) -> tuple[int, int] | None:
    plate, mjd = h.get("PLATEID"), h.get("MJD")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (plate, mjd)):
        return plate, mjd
    m = _NAME.search(source.name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _plugmap(source: Source, nfiber: int) -> HDU:
    plug = source.fits.get(_PLUGMAP)
    if plug is None or plug.xtension != "BINTABLE":
        raise SpectrumError("missing_hdu", f"HDU{_PLUGMAP} is not the PLUGMAP table",
                            source=source.name)
    if plug.nrows != nfiber:
        raise SpectrumError("bad_shape", f"PLUGMAP has {plug.nrows} rows, the images "
                            f"{nfiber} fibres", source=source.name)
    return plug


def _text_column(hdu: HDU, name: str) -> list[str] | None:
    if name.upper() not in hdu.columns:
        return None
    arr = hdu.column(name)
    if arr.dtype.kind != "S" or arr.ndim != 1:
        raise SpectrumError("bad_dtype", f"PLUGMAP {name} must be a text column",
                            source=hdu.source)
    return [v.decode("ascii", "replace").strip() for v in arr]


def _scalar_column(hdu: HDU, name: str, kinds: str = "fiu") -> np.ndarray | None:
    if name.upper() not in hdu.columns:
        return None
    arr = numeric_column(hdu, name, kinds=kinds)
    if arr.ndim != 1:
        raise SpectrumError("bad_shape", f"PLUGMAP {name} must be a scalar column",
                            source=hdu.source)
    return arr


def _metas(source: Source, plug: HDU, plate_mjd: tuple[int, int] | None
           ) -> list[dict[str, Any]]:
    """One meta dict per fibre, in row order, from the plug map."""
    fiberid = _scalar_column(plug, "FIBERID", kinds="iu")
    if fiberid is None:
        raise SpectrumError("missing_column", "PLUGMAP has no FIBERID", source=source.name)
    objtype = _text_column(plug, "OBJTYPE")
    ra, dec = _scalar_column(plug, "RA"), _scalar_column(plug, "DEC")
    base: dict[str, Any] = {"survey": "sdss"}
    if plate_mjd is not None:
        base["plate"], base["mjd"] = plate_mjd
    out = []
    for i in range(plug.nrows):
        fibre = int(fiberid[i])
        meta = dict(base, fibre=fibre)
        meta["object_id"] = (plate_mjd_fiber(*plate_mjd, fibre) if plate_mjd is not None
                             else f"{fibre:04d}")
        if ra is not None and dec is not None:
            meta["ra"], meta["dec"] = plain(ra[i]), plain(dec[i])
        if objtype is not None:
            meta["objtype"] = objtype[i]
            if objtype[i].upper() == "SKY":
                meta["warnings"] = [SKY_WARNING]
        out.append(meta)
    return out


def read_sdss_spplate(source: Source) -> list[Spectrum]:
    primary = source.fits[0]
    shape = primary.shape
    if len(shape) != 2:
        raise SpectrumError("bad_shape", f"primary image has shape {shape}, expected "
                            "(NFIBER, NPIX)", source=source.name)
    ivar = _required_image(source, _IVAR, "IVAR", shape)
    andmask = _required_image(source, _ANDMASK, "ANDMASK", shape)
    if andmask.header.int("BITPIX", source=source.name) <= 0:
        raise SpectrumError("bad_dtype", "ANDMASK must be an integer image", source=source.name)
    nfiber, npix = shape
    plug = _plugmap(source, nfiber)
    h = primary.header
    wave = coeff_wavelength(h, npix, source)
    metas = _metas(source, plug, _plate_mjd(source, h))
    truncated = truncation_warning(source)  # cut inside an HDU not read (SKY): say so
    if truncated:
        for meta in metas:
            meta["warnings"] = [*meta.get("warnings", []), truncated]
    return make_spectra(wave, primary.image(), ivar.image(), and_mask_bad(andmask.image()),
                        metas, source=source.name)


# 15: spPlate's primary image (COEFF0/COEFF1, ≥ 4 rows) also satisfies sdss-spspec's rule
register_reader("sdss-spplate", identify_sdss_spplate, read_sdss_spplate, priority=15,
                description="SDSS spPlate-PLATE-MJD (one spectrum per fibre, plug map ids)")
