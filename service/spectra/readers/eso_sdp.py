"""ESO Phase 3 science data product (SDP) 1D spectra → one :class:`Spectrum` per table row.

The format ESO archives and 4MOST delivers (ESO SDP standard, GEN-SPE-ESO-33000-5335, §5.1):
primary header with ``PRODCATG = 'SCIENCE.SPECTRUM'``; HDU1 a binary table whose vector
columns hold the whole spectrum — ``WAVE``, ``FLUX``, optionally ``ERR`` (1σ) and ``QUAL``
(0 = good). The standard puts one spectrum (one row) in a file, so an ESO or 4MOST
multi-object delivery is many files: each is read on its own, one result per file. A table
of several rows with the same vector columns — one object per row, as multi-object pipelines
bundle the spectra of one observation — is read as one spectrum per row, each with its own
id: the row's ``OBJECT``/``OBJECT_ID``/``OBJ_ID``/``TARGETID``/``TARGET``/``NAME`` column
(first present), else the header's ``OBJECT`` and the row number (``NGC 1234#2``); per-row
``RA``/``DEC`` columns override the header's. A many-row table of *scalar* WAVE/FLUX (one
pixel per row) is not this format and is not identified.

Units come from ``TUNITn`` parsed by ``astropy.units`` (cached per string): wavelengths
(``nm``, ``Angstrom``, ``um``, ...) are converted to Å, ``ERR`` to the unit of ``FLUX``.
Wavelengths are vacuum unless the file says air — the WAVE column's ``TUCDn`` contains
``obs.atmos`` (the standard's UCD for air wavelengths) or a header has ``AIRORVAC = 'air'`` /
``VACUUM = F`` — in which case :func:`air_to_vacuum` converts them. Bad pixels:
``QUAL != 0``, ERR ≤ 0 or non-finite.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from astropy import units as u

from service.io.fitsview import HDU, Header
from service.io.source import Source

from ..errors import SpectrumError
from ..registry import register_reader
from ..spectrum import Spectrum, make_spectrum
from ..wavelength import air_to_vacuum
from ._common import header_meta, numeric_column, plain

_META_KEYS = ("OBJECT", "RA", "DEC", "PRODCATG", "TELESCOP", "INSTRUME", "ORIGIN", "MJD-OBS",
              "SPECSYS", "OBID1", "PROG_ID")


def _table(source: Source) -> HDU | None:
    """HDU1, where the SDP standard puts the SPECTRUM table."""
    hdu = source.fits.get(1)
    return hdu if hdu is not None and hdu.xtension == "BINTABLE" else None


# per-row id columns of a multi-row table, in order of preference
ID_COLUMNS = ("OBJECT", "OBJECT_ID", "OBJ_ID", "TARGETID", "TARGET", "NAME")


def identify_eso_sdp(source: Source) -> bool:
    """A FITS whose first table has WAVE and FLUX columns and either one row or several rows
    of vector columns (and, if the primary header has PRODCATG, it is a SCIENCE.SPECTRUM)."""
    if not source.is_fits:
        return False
    prodcatg = source.fits[0].header.get("PRODCATG")
    if prodcatg is not None and not str(prodcatg).upper().startswith("SCIENCE.SPECTRUM"):
        return False
    hdu = _table(source)
    if hdu is None or not {"WAVE", "FLUX"} <= set(hdu.columns):
        return False
    return hdu.nrows == 1 or (hdu.nrows > 1 and _vector_columns(hdu))


def _vector_columns(hdu: HDU) -> bool:
    """WAVE and FLUX hold a whole spectrum per row (repeat > 1), not one pixel per row."""
    return all(hdu.columns[c].repeat > 1 for c in ("WAVE", "FLUX"))


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


def _angstrom_per_unit(hdu: HDU, source: Source) -> float:
    """Å per unit of the WAVE column."""
    text = _column_meta(hdu, "WAVE", "TUNIT")
    unit = _unit(text)
    if unit is None:
        raise SpectrumError("bad_units", f"WAVE unit {text!r} not understood", source=source.name)
    try:
        return float(unit.to(u.AA))
    except u.UnitConversionError:
        raise SpectrumError("bad_units", f"WAVE unit {text!r} is not a length",
                            source=source.name) from None


def _is_air(hdu: HDU, primary: Header) -> bool:
    if "obs.atmos" in _column_meta(hdu, "WAVE", "TUCD").lower():
        return True
    for h in (primary, hdu.header):
        if str(h.get("AIRORVAC", "")).strip().lower() == "air" or h.get("VACUUM") is False:
            return True
    return False


def _error_factor(hdu: HDU, source: Source) -> float:
    """FLUX units per ERR unit (1 when they are the same or ERR has none)."""
    fu, eu = _column_meta(hdu, "FLUX", "TUNIT"), _column_meta(hdu, "ERR", "TUNIT")
    if fu.strip() == eu.strip() or not eu.strip():
        return 1.0
    fun, eun = _unit(fu), _unit(eu)
    if fun is None or eun is None:
        raise SpectrumError("bad_units", f"ERR unit {eu!r} vs FLUX unit {fu!r}",
                            source=source.name)
    try:
        return float(eun.to(fun))
    except u.UnitConversionError:
        raise SpectrumError("bad_units", f"ERR unit {eu!r} not convertible to {fu!r}",
                            source=source.name) from None


def read_eso_sdp(source: Source) -> list[Spectrum]:
    hdu = _table(source)
    if hdu is None:
        raise SpectrumError("missing_hdu", "no SPECTRUM table", source=source.name)
    n = hdu.nrows
    if n == 0:
        raise SpectrumError("empty_spectrum", "SPECTRUM table has no rows", source=source.name)
    if n > 1 and not _vector_columns(hdu):
        raise SpectrumError("bad_shape", f"SPECTRUM table has {n} rows of scalar WAVE/FLUX, "
                            "expected one spectrum per row", source=source.name)
    waves = numeric_column(hdu, "WAVE").reshape(n, -1)
    fluxes = numeric_column(hdu, "FLUX").reshape(n, -1)
    factor = _angstrom_per_unit(hdu, source)
    primary = source.fits[0].header
    air = _is_air(hdu, primary)
    errs = quals = None
    err_factor = 1.0
    if "ERR" in hdu.columns:
        errs = numeric_column(hdu, "ERR").reshape(n, -1)
        if errs.shape != fluxes.shape:
            raise SpectrumError("bad_shape", f"ERR has {errs.shape[1]} pixels, FLUX "
                                f"{fluxes.shape[1]}", source=source.name)
        err_factor = _error_factor(hdu, source)
    if "QUAL" in hdu.columns:
        quals = numeric_column(hdu, "QUAL", kinds="biu").reshape(n, -1)
    metas = _row_metas(hdu, primary, air)
    out = []
    for i in range(n):
        wave = np.asarray(waves[i], dtype=np.float64) * factor
        if air:
            wave = air_to_vacuum(wave)
        ivar = None
        if errs is not None:
            err = np.asarray(errs[i], dtype=np.float64) * err_factor
            with np.errstate(all="ignore"):
                ivar = np.where(err > 0, 1.0 / (err * err), 0.0)
        mask = None if quals is None else np.asarray(quals[i]) != 0
        out.append(make_spectrum(wave, fluxes[i], ivar, mask, metas[i], source=source.name))
    return out


def _row_metas(hdu: HDU, primary: Header, air: bool) -> list[dict[str, object]]:
    """Each row's meta: the header's keys, then the row's own id and position."""
    n = hdu.nrows
    base = {"survey": "eso", **header_meta(primary, _META_KEYS)}
    base["flux_unit"] = _column_meta(hdu, "FLUX", "TUNIT").strip()
    base["air_to_vacuum"] = air
    for k in ("ra", "dec"):
        if k in base:
            base[k] = plain(base[k]) if isinstance(base[k], (int, float)) else None
    obj = str(base.get("object", ""))
    ids = _row_ids(hdu)
    ra, dec = (_scalar(hdu, c) for c in ("RA", "DEC"))
    metas = []
    for i in range(n):
        meta = dict(base)
        if ids is not None:
            meta["object_id"] = ids[i]
        else:
            meta["object_id"] = obj if n == 1 else f"{obj}#{i + 1}"
        if ra is not None and dec is not None:
            meta["ra"], meta["dec"] = plain(ra[i]), plain(dec[i])
        metas.append(meta)
    return metas


def _row_ids(hdu: HDU) -> list[str] | None:
    """The first per-row id column present (text or integer), as strings."""
    for name in ID_COLUMNS:
        if name not in hdu.columns:
            continue
        arr = hdu.column(name)
        if arr.ndim != 1 or arr.dtype.kind not in "Siu":
            raise SpectrumError("bad_dtype", f"id column {name!r} must be text or an integer",
                                source=hdu.source)
        if arr.dtype.kind == "S":
            return [v.decode("ascii", "replace").strip() for v in arr]
        return [str(int(v)) for v in arr]
    return None


def _scalar(hdu: HDU, name: str) -> np.ndarray | None:
    if name not in hdu.columns:
        return None
    arr = numeric_column(hdu, name)
    return arr if arr.ndim == 1 else None


register_reader("eso-sdp", identify_eso_sdp, read_eso_sdp, priority=10,
                description="ESO Phase 3 SDP 1D spectra (WAVE/FLUX/ERR table, one per row)")
