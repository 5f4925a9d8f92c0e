"""specutils' own FITS table (``Spectrum.write(path, format="tabular-fits")``) → Spectrum(s).

What a specutils user saves is what they will upload, and before this reader no reader
identified it (415 ``unknown_format``). The layout, from specutils' ``tabular_fits_writer``:
an empty primary HDU (the spectrum's ``meta["header"]``), and HDU1 a binary table with
``EXTNAME = 'DATA'`` whose first column is the spectral axis, named after its physical type
(``wavelength``, ``frequency``, ``energy``, ``wavenumber``), then ``flux``, optionally
``uncertainty`` (a 1σ in the flux unit: the writer turns every uncertainty into
``StdDevUncertainty``) and ``mask`` (non-zero = bad). One row per pixel; a spectrum1D holding
several spectra writes vector columns, one element per spectrum.

Units come from ``TUNITn``, as in ``specutils_adapter`` (the same conversion): the spectral
axis to Å through ``u.spectral()``, flux to 1e-17 erg s⁻¹ cm⁻² Å⁻¹ when it is a flux density
(otherwise kept, with a warning on the spectrum), σ → ivar. Vacuum unless the primary header
says ``AIRORVAC = 'air'`` (specutils does not record it otherwise).
"""

from __future__ import annotations

import numpy as np
from astropy import units as u

from service.io.fitsview import HDU
from service.io.source import Source

from ..errors import SpectrumError
from ..registry import register_reader
from ..spectrum import Spectrum, make_spectrum
from ..specutils_adapter import FLUX_UNIT, flux_factor
from ..wavelength import air_to_vacuum
from ._common import header_meta, numeric_column

SPECTRAL_COLUMNS = ("WAVELENGTH", "FREQUENCY", "ENERGY", "WAVENUMBER")
_META_KEYS = ("OBJECT", "RA", "DEC", "TELESCOP", "INSTRUME", "MJD-OBS")


def _table(source: Source) -> HDU | None:
    if not source.is_fits:
        return None
    hdu = source.fits.get(1)
    if hdu is None or hdu.xtension != "BINTABLE" or hdu.name != "DATA":
        return None
    return hdu


def identify_specutils_tabular(source: Source) -> bool:
    """HDU1 is the ``DATA`` table with a spectral-axis column first and ``flux`` second."""
    hdu = _table(source)
    if hdu is None:
        return False
    names = [c.name.upper() for c in sorted(hdu.columns.values(), key=lambda c: c.index)]
    return len(names) >= 2 and names[0] in SPECTRAL_COLUMNS and names[1] == "FLUX"


def _unit(hdu: HDU, column: str, source: Source) -> u.UnitBase | None:
    index = hdu.columns[column].index
    text = str(hdu.header.get(f"TUNIT{index}", "")).strip()
    if not text:
        return None
    try:
        return u.Unit(text, parse_strict="raise")
    except (ValueError, TypeError):
        raise SpectrumError("bad_units", f"{column.lower()} unit {text!r} not understood",
                            source=source.name) from None


def _angstrom(hdu: HDU, column: str, source: Source) -> np.ndarray:
    values = numeric_column(hdu, column).astype(np.float64)
    if values.ndim != 1:
        raise SpectrumError("bad_shape", "the spectral axis column must hold one value a row",
                            source=source.name)
    unit = _unit(hdu, column, source) or u.AA  # no unit: Å, the service's own
    try:
        return (values * unit).to_value(u.AA, u.spectral())
    except u.UnitConversionError:
        raise SpectrumError("bad_units", f"{column.lower()} unit {unit} is not spectral",
                            source=source.name) from None


def _rows(arr: np.ndarray) -> np.ndarray:
    """(npix,) or (npix, n) as written → (n, npix)."""
    return arr.reshape(arr.shape[0], -1).T


def read_specutils_tabular(source: Source) -> list[Spectrum]:
    hdu = _table(source)
    if hdu is None:
        raise SpectrumError("missing_hdu", "no DATA table in HDU 1", source=source.name)
    if hdu.nrows == 0:
        raise SpectrumError("empty_spectrum", "the DATA table has no rows", source=source.name)
    first = min(hdu.columns.values(), key=lambda c: c.index).name.upper()
    wave = _angstrom(hdu, first, source)
    primary = source.fits[0].header
    if str(primary.get("AIRORVAC", "")).strip().lower() == "air":
        wave = air_to_vacuum(wave)
    flux = _rows(numeric_column(hdu, "FLUX").astype(np.float64))
    funit = _unit(hdu, "FLUX", source)
    factor = flux_factor(funit, wave) if funit is not None else None
    notes = [] if factor is not None else [
        (f"flux unit {funit or 'none'} is not a spectral flux density: used as it is, "
         f"not in {FLUX_UNIT}")]
    factor = np.ones_like(wave) if factor is None else factor
    sigma = (_rows(numeric_column(hdu, "UNCERTAINTY").astype(np.float64))
             if "UNCERTAINTY" in hdu.columns else None)
    mask = (_rows(numeric_column(hdu, "MASK", kinds="fiub") != 0)
            if "MASK" in hdu.columns else np.zeros(flux.shape, bool))
    order = np.argsort(wave, kind="stable")  # a frequency axis runs the other way
    base = header_meta(primary, _META_KEYS)
    oid = str(base.get("object", ""))
    out = []
    for i in range(flux.shape[0]):
        ivar = None
        if sigma is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                s = sigma[i] * factor
                ivar = np.where(s > 0, 1.0 / (s * s), 0.0)[order]
        meta = {"survey": "specutils", **base,
                "object_id": oid if flux.shape[0] == 1 else f"{oid}[{i}]" if oid else str(i)}
        if notes:
            meta["warnings"] = notes
        out.append(make_spectrum(wave[order], (flux[i] * factor)[order], ivar,
                                 np.broadcast_to(mask, flux.shape)[i][order], meta,
                                 source=source.name))
    return out


register_reader("specutils-tabular", identify_specutils_tabular, read_specutils_tabular,
                priority=0, description="specutils' tabular-fits (Spectrum.write(..., "
                "format='tabular-fits'))")
