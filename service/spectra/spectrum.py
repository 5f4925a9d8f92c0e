"""The in-memory spectrum record every reader returns and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import SpectrumError
from .select import zero_where_not


@dataclass(frozen=True, slots=True, eq=False)
class Spectrum:
    """One 1D spectrum in vacuum wavelength.

    ``mask`` is True where a pixel is bad; readers fold their survey's own bad-pixel
    conventions (and_mask bits, ivar == 0, ...) into it so that downstream code needs to know
    nothing about the survey. ``meta`` keeps the survey name, object id and the header keys
    worth keeping (plain JSON-able values only).
    """

    wavelength: np.ndarray  # float64, Å, vacuum, strictly increasing
    flux: np.ndarray  # float32/64, any consistent flux-density unit
    ivar: np.ndarray  # inverse variance of flux; 0 where unknown/bad
    mask: np.ndarray  # bool, True = bad pixel
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def object_id(self) -> str:
        return str(self.meta.get("object_id", ""))

    @property
    def npix(self) -> int:
        return int(self.wavelength.shape[0])

    @property
    def masked_fraction(self) -> float:
        return float(self.mask.mean()) if self.npix else 1.0


def make_spectrum(
    wavelength: Any,
    flux: Any,
    ivar: Any | None = None,
    mask: Any | None = None,
    meta: dict[str, Any] | None = None,
    *,
    source: str | None = None,
) -> Spectrum:
    """Validate raw arrays and build a :class:`Spectrum`.

    Why one constructor: every reader (and the JSON/npy path) funnels through the same checks,
    so a bad input fails with the same code whatever format it came in. Non-finite flux or
    ivar is not an error (real spectra have them); such pixels are masked instead.
    """
    arrays = {}
    for name, value in (("wavelength", wavelength), ("flux", flux)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise SpectrumError("bad_dtype", f"{name} has dtype {arr.dtype}", source=source)
        arrays[name] = arr
    if arrays["wavelength"].ndim != 1 or arrays["flux"].ndim != 1:
        raise SpectrumError("bad_shape", "wavelength and flux must be 1D", source=source)
    wave = arrays["wavelength"].astype(np.float64, copy=False)
    fl = arrays["flux"].astype(np.float64, copy=False)
    n = wave.shape[0]
    if n == 0:
        raise SpectrumError("empty_spectrum", "no pixels", source=source)
    if fl.shape[0] != n:
        raise SpectrumError(
            "bad_shape", f"flux has {fl.shape[0]} pixels, wavelength {n}", source=source
        )
    if ivar is None:
        iv = np.ones(n, dtype=np.float64)
    else:
        iv = np.asarray(ivar)
        if iv.dtype.kind not in "fiu":
            raise SpectrumError("bad_dtype", f"ivar has dtype {iv.dtype}", source=source)
        iv = iv.astype(np.float64, copy=False).reshape(-1)
        if iv.shape[0] != n:
            raise SpectrumError("bad_shape", f"ivar has {iv.shape[0]} pixels, expected {n}",
                                source=source)
    if mask is None:
        mk = np.zeros(n, dtype=bool)
    else:
        mk = np.asarray(mask)
        if mk.dtype.kind not in "biu":
            raise SpectrumError("bad_dtype", f"mask has dtype {mk.dtype}", source=source)
        mk = mk.reshape(-1).astype(bool)
        if mk.shape[0] != n:
            raise SpectrumError("bad_shape", f"mask has {mk.shape[0]} pixels, expected {n}",
                                source=source)
    _check_wavelength(wave, source)
    fl, iv, bad = _clean(fl, iv, mk)
    return Spectrum(wavelength=wave, flux=fl, ivar=iv, mask=bad, meta=dict(meta or {}))


# fibres cleaned together in make_spectra: temporaries of a few MB, not of the whole table
_BLOCK_ROWS = 64


def make_spectra(
    wavelength: Any,
    flux: Any,
    ivar: Any | None,
    mask: Any | None,
    metas: list[dict[str, Any]],
    *,
    source: str | None = None,
) -> list[Spectrum]:
    """Validate the rows of ``flux`` (and ``ivar``, ``mask``), all on one shared
    ``wavelength`` (an exposure's fibres), and build one :class:`Spectrum` per row.

    The same checks, codes and numbers as :func:`make_spectrum` row by row; the grid is
    checked once rather than per fibre, the pixels are cleaned a block of rows at a time,
    and every spectrum shares the one wavelength array, which is what lets
    ``preprocess_many`` resample them as blocks.
    """
    wave = np.asarray(wavelength)
    fl = np.asarray(flux)
    iv_all = None if ivar is None else np.asarray(ivar)
    mk_all = None if mask is None else np.asarray(mask)
    if wave.dtype.kind not in "fiu":
        raise SpectrumError("bad_dtype", f"wavelength has dtype {wave.dtype}", source=source)
    if wave.ndim != 1:
        raise SpectrumError("bad_shape", "wavelength must be 1D", source=source)
    n = wave.shape[0]
    if n == 0:
        raise SpectrumError("empty_spectrum", "no pixels", source=source)
    for name, arr, kinds in (("flux", fl, "fiu"), ("ivar", iv_all, "fiu"),
                             ("mask", mk_all, "biu")):
        if arr is None:
            continue
        if arr.dtype.kind not in kinds:
            raise SpectrumError("bad_dtype", f"{name} has dtype {arr.dtype}", source=source)
        if arr.shape != (len(metas), n):
            raise SpectrumError("bad_shape", f"{name} has shape {arr.shape}, expected "
                                f"{(len(metas), n)}", source=source)
    wave = wave.astype(np.float64, copy=False)
    _check_wavelength(wave, source)
    out = []
    for b in range(0, len(metas), _BLOCK_ROWS):
        rows = slice(b, b + _BLOCK_ROWS)
        f = fl[rows]  # views: _clean converts (and copies) each once
        iv = np.ones(f.shape) if iv_all is None else iv_all[rows]
        mk = np.zeros(f.shape, dtype=bool) if mk_all is None else mk_all[rows].astype(bool)
        f, iv, bad = _clean(f, iv, mk)
        out.extend(Spectrum(wavelength=wave, flux=f[j], ivar=iv[j], mask=bad[j],
                            meta=dict(metas[b + j])) for j in range(f.shape[0]))
    return out


def _check_wavelength(wave: np.ndarray, source: str | None) -> None:
    if not np.all(np.isfinite(wave)):
        raise SpectrumError("non_finite", "wavelength contains NaN or inf", source=source)
    if wave.shape[0] > 1 and not np.all(np.diff(wave) > 0):
        raise SpectrumError(
            "wavelength_not_increasing", "wavelength must be strictly increasing", source=source
        )
    if wave[0] <= 0:
        raise SpectrumError("bad_units", "wavelength must be positive (Å)", source=source)


def _clean(fl: np.ndarray, iv: np.ndarray, mk: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask non-finite flux or ivar and ivar ≤ 0 (real spectra have them; not an error), and
    zero flux and ivar there: new arrays, the caller's are never written."""
    bad = mk | ~np.isfinite(fl) | ~np.isfinite(iv) | (iv <= 0)
    keep = ~bad
    fl = zero_where_not(np.array(fl, dtype=np.float64), keep)
    iv = zero_where_not(np.array(iv, dtype=np.float64), keep)
    return fl, iv, bad
