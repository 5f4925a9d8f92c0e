"""ESO Phase 3 science data product (SDP) 1D spectrum → one :class:`Spectrum`.

The format ESO archives and 4MOST delivers (ESO SDP standard, GEN-SPE-ESO-33000-5335, §5.1):
primary header with ``PRODCATG = 'SCIENCE.SPECTRUM'``; HDU1 a binary table of exactly one row
whose vector columns hold the whole spectrum — ``WAVE``, ``FLUX``, optionally ``ERR`` (1σ) and
``QUAL`` (0 = good). Units come from ``TUNITn`` parsed by ``astropy.units`` (cached per string):
wavelengths (``nm``, ``Angstrom``, ``um``, ...) are converted to Å, ``ERR`` to the unit of
``FLUX``. Wavelengths are vacuum unless the file says air — the WAVE column's ``TUCDn``
contains ``obs.atmos`` (the standard's UCD for air wavelengths) or a header has
``AIRORVAC = 'air'`` / ``VACUUM = F`` — in which case :func:`air_to_vacuum` converts them.
Bad pixels: ``QUAL != 0``, ERR ≤ 0 or non-finite.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from astropy import units as u

from ..errors import SpectrumError
from ..fitsview import HDU, Header
from ..registry import register_reader
from ..source import Source
from ..spectrum import Spectrum, make_spectrum
from ..wavelength import air_to_vacuum
from ._common import header_meta, numeric_column, plain

_META_KEYS = ("OBJECT", "RA", "DEC", "PRODCATG", "TELESCOP", "INSTRUME", "ORIGIN", "MJD-OBS",
              "SPECSYS", "OBID1", "PROG_ID")


def _table(source: Source) -> HDU | None:
    """HDU1, where the SDP standard puts the SPECTRUM table."""
    hdu = source.fits.get(1)
    return hdu if hdu is not None and hdu.xtension == "BINTABLE" else None


def identify_eso_sdp(source: Source) -> bool:
    """A FITS whose first table has one row with WAVE and FLUX columns (and, if the primary
    header has PRODCATG, it is a SCIENCE.SPECTRUM)."""
    if not source.is_fits:
        return False
    prodcatg = source.fits[0].header.get("PRODCATG")
    if prodcatg is not None and not str(prodcatg).upper().startswith("SCIENCE.SPECTRUM"):
        return False
    hdu = _table(source)
    return hdu is not None and hdu.nrows == 1 and {"WAVE", "FLUX"} <= set(hdu.columns)


@lru_cache(maxsize=64)
def _unit(text: str) -> u.UnitBase | None:
    if not text.strip():
        return None
    try:
        return u.Unit(text.strip(), parse_strict="raise")
    except (ValueError, TypeError):
        try:
            return u.Unit(text.strip(), format="fits", parse_strict="raise")
        except (ValueError, TypeError):
            return None


def _column_meta(hdu: HDU, name: str, key: str) -> str:
    col = hdu.columns[name.upper()]
    return str(hdu.header.get(f"{key}{col.index}", ""))


def _to_angstrom(hdu: HDU, wave: np.ndarray, source: Source) -> np.ndarray:
    text = _column_meta(hdu, "WAVE", "TUNIT")
    unit = _unit(text)
    if unit is None:
        raise SpectrumError("bad_units", f"WAVE unit {text!r} not understood", source=source.name)
    try:
        factor = unit.to(u.AA)
    except u.UnitConversionError:
        raise SpectrumError("bad_units", f"WAVE unit {text!r} is not a length",
                            source=source.name) from None
    return wave * factor


def _is_air(hdu: HDU, primary: Header) -> bool:
    if "obs.atmos" in _column_meta(hdu, "WAVE", "TUCD").lower():
        return True
    for h in (primary, hdu.header):
        if str(h.get("AIRORVAC", "")).strip().lower() == "air" or h.get("VACUUM") is False:
            return True
    return False


def _error_in_flux_unit(hdu: HDU, err: np.ndarray, source: Source) -> np.ndarray:
    fu, eu = _column_meta(hdu, "FLUX", "TUNIT"), _column_meta(hdu, "ERR", "TUNIT")
    if fu.strip() == eu.strip() or not eu.strip():
        return err
    fun, eun = _unit(fu), _unit(eu)
    if fun is None or eun is None:
        raise SpectrumError("bad_units", f"ERR unit {eu!r} vs FLUX unit {fu!r}",
                            source=source.name)
    try:
        return err * eun.to(fun)
    except u.UnitConversionError:
        raise SpectrumError("bad_units", f"ERR unit {eu!r} not convertible to {fu!r}",
                            source=source.name) from None


def read_eso_sdp(source: Source) -> list[Spectrum]:
    hdu = _table(source)
    if hdu is None:
        raise SpectrumError("missing_hdu", "no SPECTRUM table", source=source.name)
    if hdu.nrows != 1:
        raise SpectrumError("bad_shape", f"SPECTRUM table has {hdu.nrows} rows, expected 1",
                            source=source.name)
    wave = np.asarray(numeric_column(hdu, "WAVE")[0], dtype=np.float64).reshape(-1)
    flux = np.asarray(numeric_column(hdu, "FLUX")[0]).reshape(-1)
    wave = _to_angstrom(hdu, wave, source)
    primary = source.fits[0].header
    air = _is_air(hdu, primary)
    if air:
        wave = air_to_vacuum(wave)
    ivar = None
    if "ERR" in hdu.columns:
        err = _error_in_flux_unit(hdu, np.asarray(numeric_column(hdu, "ERR")[0], np.float64),
                                  source)
        err = err.reshape(-1)
        if err.shape != flux.shape:
            raise SpectrumError("bad_shape", f"ERR has {err.size} pixels, FLUX {flux.size}",
                                source=source.name)
        with np.errstate(all="ignore"):
            ivar = np.where(err > 0, 1.0 / (err * err), 0.0)
    mask = None
    if "QUAL" in hdu.columns:
        mask = np.asarray(numeric_column(hdu, "QUAL", kinds="biu")[0]).reshape(-1) != 0
    meta = {"survey": "eso", **header_meta(primary, _META_KEYS)}
    meta["object_id"] = str(meta.get("object", ""))
    meta["flux_unit"] = _column_meta(hdu, "FLUX", "TUNIT").strip()
    meta["air_to_vacuum"] = air
    for k in ("ra", "dec"):
        if k in meta:
            meta[k] = plain(meta[k]) if isinstance(meta[k], (int, float)) else None
    return [make_spectrum(wave, flux, ivar, mask, meta, source=source.name)]


register_reader("eso-sdp", identify_eso_sdp, read_eso_sdp, priority=10,
                description="ESO Phase 3 SDP 1D spectrum (one-row WAVE/FLUX/ERR table)")
