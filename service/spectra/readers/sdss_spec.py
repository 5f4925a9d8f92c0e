"""SDSS/BOSS/eBOSS ``spec-PLATE-MJD-FIBER.fits`` (full and lite) → one :class:`Spectrum`.

Layout (https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/spectra/PLATE4/spec.html):
HDU1 ``COADD`` table with ``flux`` [1e-17 erg/s/cm²/Å], ``loglam`` (log10 vacuum Å), ``ivar``,
``and_mask``, ``or_mask``, ...; HDU2 ``SPECOBJ`` (one row: CLASS, SUBCLASS, Z, ...). Lite files
lack the per-exposure HDUs; a COADD table with only flux/loglam/ivar is read too (no mask
column: the mask is ivar == 0 alone).

Bad pixels: ``ivar == 0`` or any bit of ``and_mask`` in :data:`AND_MASK_BAD`. ``and_mask``
holds the SPPIXMASK bits set in *every* exposure, so a set bit means the coadded pixel itself
is compromised. We take every bit, i.e. ``and_mask != 0`` (the rule the SDSS documentation
recommends): the fibre-level bits 0–12 (NOPLUG, BADTRACE, BADFLAT, BADARC, MANYBADCOLUMNS,
MANYREJECTED, LARGESHIFT, BADSKYFIBER, NEARWHOPPER, WHOPPER, SMEARIMAGE, SMEARHIGHSN,
SMEARMEDSN) and the pixel-level bits 16–28 (NEARBADPIXEL, LOWFLAT, FULLREJECT, PARTIALREJECT,
SCATTEREDLIGHT, CROSSTALK, NOSKY, BRIGHTSKY, NODATA, COMBINEREJ, BADFLUXFACTOR, BADSKYCHI,
REDMONSTER), plus any bit a later pipeline adds. The real A0 star in ../shared has bit 16
(NEARBADPIXEL) on a few pixels.
``or_mask`` (set in *any* exposure) is not used: it flags pixels the coadd already repaired.
"""

from __future__ import annotations

import re

import numpy as np

from service.io.fitsview import HDU
from service.io.source import Source

from ..errors import SpectrumError
from ..registry import register_reader
from ..spectrum import Spectrum, make_spectrum
from ..wavelength import loglam_to_wavelength
from ._common import numeric_column, plain, truncation_warning

_NAME = re.compile(r"spec(?:lite)?-(\d{4,6})-(\d{5})-(\d{4})")
_SPECOBJ_KEYS = ("CLASS", "SUBCLASS", "Z", "Z_ERR", "ZWARNING", "SURVEY", "PLUG_RA", "PLUG_DEC")


def and_mask_bad(and_mask: np.ndarray) -> np.ndarray:
    """True where an SDSS ``and_mask`` marks a pixel bad: any bit (the rule in this module's
    docstring). One function, so that every SDSS product that carries an and-mask (spec
    files' column, spPlate's image) masks exactly the same pixels; ``ivar == 0`` is masked
    by ``make_spectrum`` for all readers alike."""
    return and_mask != 0


def plate_mjd_fiber(plate: int, mjd: int, fiber: int) -> str:
    """The SDSS spectrum id ``PLATE-MJD-FIBER``, zero-padded as SDSS names its files
    (``1198-52669-0063``)."""
    return f"{plate:04d}-{mjd:05d}-{fiber:04d}"


def _coadd(source: Source) -> HDU | None:
    """HDU1, where every spec/spec-lite file has its COADD table (looking it up by name would
    scan every HDU of any FITS the registry asks us about)."""
    hdu = source.fits.get(1)
    if hdu is None or hdu.xtension != "BINTABLE":
        return None
    return hdu


def identify_sdss_spec(source: Source) -> bool:
    """A FITS whose COADD (or first) table has ``flux``, ``loglam`` and ``ivar`` columns."""
    if not source.is_fits:
        return False
    hdu = _coadd(source)
    return hdu is not None and {"FLUX", "LOGLAM", "IVAR"} <= set(hdu.columns)


def _specobj(source: Source) -> dict[str, object]:
    """CLASS/SUBCLASS/Z/... from the one-row SPECOBJ table, when the file has it."""
    hdu = source.fits.get("SPECOBJ")
    if hdu is None or hdu.xtension != "BINTABLE" or hdu.nrows < 1:
        return {}
    out: dict[str, object] = {}
    for key in _SPECOBJ_KEYS:
        if key in hdu.columns:
            value = plain(hdu.column(key)[0])
            if value is not None:
                out[key.lower()] = value
    return out


def _object_id(source: Source, primary_header) -> str:
    plate, mjd, fiber = (primary_header.get(k) for k in ("PLATEID", "MJD", "FIBERID"))
    if all(isinstance(v, int) for v in (plate, mjd, fiber)):
        return plate_mjd_fiber(plate, mjd, fiber)
    m = _NAME.search(source.name)
    return "-".join(m.groups()) if m else ""


def _truncation_warnings(source: Source, hdu: HDU, specobj: dict[str, object]) -> list[str]:
    """Signs that the file was cut short. COADD is all the classifier needs, so a file cut
    after it still reads, but it lost its SPECOBJ row and exposures and may be a failed
    transfer: the result says so rather than answer as if the file were whole. A pipeline
    spec/spec-lite file (COADD with ``and_mask``) always has SPECOBJ as HDU 2; the minimal
    COADD-only form (flux/loglam/ivar) has none and is not warned about."""
    out = [w] if (w := truncation_warning(source)) else []
    if not specobj and "AND_MASK" in hdu.columns and source.fits.get("SPECOBJ") is None:
        out.append("no SPECOBJ HDU after COADD, which SDSS spec files always have: the file "
                   "looks truncated")
    return out


def read_sdss_spec(source: Source) -> list[Spectrum]:
    hdu = _coadd(source)
    if hdu is None:
        raise SpectrumError("missing_hdu", "no COADD table", source=source.name)
    loglam = numeric_column(hdu, "loglam")
    flux = hdu.column("flux")  # dtype checked by make_spectrum
    ivar = hdu.column("ivar")
    if loglam.ndim != 1:
        raise SpectrumError("bad_shape", "COADD columns must be scalars", source=source.name)
    mask = None
    if "AND_MASK" in hdu.columns:
        mask = and_mask_bad(numeric_column(hdu, "and_mask", kinds="biu"))
    wave = loglam_to_wavelength(loglam)
    head = source.fits[0].header
    meta: dict[str, object] = {"survey": "sdss", "object_id": _object_id(source, head)}
    specobj = _specobj(source)
    meta.update(specobj)
    warnings = _truncation_warnings(source, hdu, specobj)
    if warnings:
        meta["warnings"] = warnings
    meta["survey"] = str(meta.get("survey") or "sdss").strip()
    ra = meta.pop("plug_ra", head.get("PLUG_RA"))
    dec = meta.pop("plug_dec", head.get("PLUG_DEC"))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (ra, dec)):
        meta["ra"], meta["dec"] = float(ra), float(dec)
    return [make_spectrum(wave, flux, ivar, mask, meta, source=source.name)]


register_reader("sdss-spec", identify_sdss_spec, read_sdss_spec, priority=10,
                description="SDSS/BOSS spec-PLATE-MJD-FIBER (full, lite, COADD-only)")
