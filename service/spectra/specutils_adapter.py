"""A specutils ``Spectrum`` (``Spectrum1D`` before specutils 2) → the JSON arrays /v1 reads.

specutils is the field's spectrum type, so a user holding one should not have to take it
apart to classify it. The service's arrays reader (``readers/arrays.py``) takes vacuum Å,
flux, ``ivar`` and a bad-pixel ``mask``; this module produces exactly that document, with the
units converted here, on the client's side, where astropy knows the spectrum's units:

- the spectral axis goes to Å through ``u.spectral()`` (frequency, energy and wavenumber axes
  too), made increasing. Air or vacuum: specutils does not record it, so vacuum is assumed
  unless ``air=True`` is passed or the spectrum's WCS says ``AWAV`` (air wavelength) or its
  header ``AIRORVAC = 'air'``; air is converted with ``wavelength.air_to_vacuum``;
- flux goes to 1e-17 erg s⁻¹ cm⁻² Å⁻¹ through ``u.spectral_density`` when its unit is a flux
  density; any other unit (counts, dimensionless) is sent as it is, with a warning;
- the uncertainty (``StdDevUncertainty``, ``VarianceUncertainty`` or ``InverseVariance``)
  becomes ``ivar`` in the converted flux unit; none means the service's default (ivar = 1);
- ``mask`` (True = bad, NDData's and the service's convention) is kept, and non-finite flux or
  uncertainty is masked, since JSON has no NaN.

specutils is a dev/optional dependency, not the service's: nothing here imports it. A
spectrum is recognised by duck typing, and only when specutils is already imported.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import astropy.units as u
import numpy as np

from .wavelength import air_to_vacuum

FLUX_UNIT = 1e-17 * u.erg / u.s / u.cm**2 / u.AA  # what SDSS spectra (and the model) use


def is_specutils_spectrum(obj: Any) -> bool:
    """A specutils Spectrum/Spectrum1D? False without importing specutils: if the caller holds
    one, specutils is in ``sys.modules`` already."""
    mod = sys.modules.get("specutils")
    if mod is None:
        return False
    cls = getattr(mod, "Spectrum", None) or getattr(mod, "Spectrum1D", None)
    return cls is not None and isinstance(obj, cls)


def _is_air(spectrum: Any, air: bool | None) -> bool:
    if air is not None:
        return air
    wcs = getattr(spectrum, "wcs", None)
    ctype = getattr(getattr(wcs, "wcs", None), "ctype", None)
    if ctype is not None and len(ctype) and str(ctype[0]).upper().startswith("AWAV"):
        return True
    header = (getattr(spectrum, "meta", None) or {}).get("header") or {}
    return str(header.get("AIRORVAC", "vac")).strip().lower().startswith("air")


def flux_factor(unit: u.UnitBase, wave_aa: np.ndarray) -> np.ndarray | None:
    """Per-pixel factor taking a flux in ``unit`` to FLUX_UNIT (F_ν too, through the pixels'
    wavelengths in Å); None when ``unit`` is not a spectral flux density. Shared with the
    reader of specutils' own FITS tables (readers/specutils_tabular.py)."""
    try:
        return (1.0 * unit).to_value(FLUX_UNIT, u.spectral_density(wave_aa * u.AA))
    except u.UnitConversionError:
        return None


def _ivar(spectrum: Any, flux_unit: u.UnitBase) -> np.ndarray | None:
    """The uncertainty as inverse variance in ``flux_unit``⁻², whatever NDData class holds it."""
    unc = getattr(spectrum, "uncertainty", None)
    if unc is None:
        return None
    kind = getattr(unc, "uncertainty_type", "")
    arr = np.asarray(unc.array, dtype=np.float64)
    own = getattr(unc, "unit", None)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "std":
            scale = (1.0 * own).to_value(flux_unit) if own is not None else 1.0
            sigma = arr * scale
            return np.where(sigma > 0, 1.0 / sigma**2, 0.0)
        if kind == "var":
            scale = (1.0 * own).to_value(flux_unit**2) if own is not None else 1.0
            var = arr * scale
            return np.where(var > 0, 1.0 / var, 0.0)
        if kind == "ivar":
            scale = (1.0 * own).to_value(flux_unit**-2) if own is not None else 1.0
            return arr * scale
    raise ValueError(f"uncertainty of type {type(unc).__name__} ({kind!r}) is not supported: "
                     "use StdDevUncertainty, VarianceUncertainty or InverseVariance")


def _rows(a: np.ndarray, axis: int) -> np.ndarray:
    """(n_spectra, npix) with the spectral axis last."""
    a = np.moveaxis(np.asarray(a), axis, -1)
    return a.reshape(-1, a.shape[-1])


def spectrum_to_arrays(spectrum: Any, *, air: bool | None = None,
                       object_id: str | None = None) -> dict[str, Any]:
    """The arrays JSON document (``readers/arrays.py``) of a specutils spectrum: one object,
    or ``{"spectra": [...]}`` when its flux holds several spectra on one spectral axis."""
    axis = getattr(spectrum, "spectral_axis_index", -1)
    wave = np.asarray(spectrum.spectral_axis.to_value(u.AA, u.spectral()), dtype=np.float64)
    if _is_air(spectrum, air):
        wave = air_to_vacuum(wave)
    order = np.argsort(wave, kind="stable")
    flux_q = spectrum.flux
    factor = flux_factor(flux_q.unit, wave)
    if factor is None:
        warnings.warn(f"flux unit {flux_q.unit!r} is not a spectral flux density: sent as it "
                      f"is, not in {FLUX_UNIT}", stacklevel=3)
        factor = np.ones_like(wave)
    flux = _rows(flux_q.value, axis) * factor
    ivar = _ivar(spectrum, flux_q.unit)
    ivar = (np.ones_like(flux) if ivar is None else _rows(ivar, axis) / factor**2)
    mask = getattr(spectrum, "mask", None)
    mask = (np.zeros(flux.shape, bool) if mask is None
            else np.broadcast_to(_rows(mask, axis) != 0, flux.shape))
    bad = mask | ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0)
    oid = object_id if object_id is not None else str(
        (getattr(spectrum, "meta", None) or {}).get("object_id", ""))
    docs = []
    for i in range(flux.shape[0]):
        b = bad[i][order]
        docs.append({
            "object_id": oid if flux.shape[0] == 1 else f"{oid}[{i}]" if oid else str(i),
            "survey": "specutils",
            "wavelength": wave[order].tolist(),
            "flux": np.where(b, 0.0, flux[i][order]).tolist(),
            "ivar": np.where(b, 0.0, ivar[i][order]).tolist(),
            "mask": b.tolist(),
        })
    return docs[0] if len(docs) == 1 else {"spectra": docs}
