"""DESI ``coadd-*.fits`` / ``spectra-*.fits`` → one :class:`Spectrum` per target.

Layout (desidatamodel, ``SPECPROD/tiles/.../coadd-*.fits``): a ``FIBERMAP`` table (one row per
target: TARGETID, TARGET_RA, TARGET_DEC, ...) and per camera ``X`` in B, R, Z the HDUs
``X_WAVELENGTH`` (npix, vacuum Å), ``X_FLUX``/``X_IVAR``/``X_MASK`` (ntarget, npix); in
``spectra-*`` files the masks are tile-compressed (read through astropy, decompressed size
checked first). Any ``X_WAVELENGTH`` + ``X_FLUX`` pair counts as a camera, so a pre-merged
``BRZ`` file reads too.

Merging: the cameras share one 0.8 Å lattice, so overlapping pixels (B/R 5760–5800 Å, R/Z
7520–7620 Å) coincide; wavelengths equal to 1e-3 Å are one pixel, combined with inverse-
variance weights (flux = Σ ivar·f / Σ ivar, ivar = Σ ivar) over the cameras that are good
there. A pixel is bad (mask True) when no camera has it good: ``X_MASK != 0`` or ivar == 0.
"""

from __future__ import annotations

import numpy as np

from service.io.source import Source

from ..errors import SpectrumError
from ..registry import register_reader
from ..spectrum import Spectrum, make_spectrum
from ._common import header_meta, numeric_column, plain

MERGE_TOL = 1e-3  # Å: wavelengths closer than this are the same pixel


def _cameras(source: Source) -> list[str]:
    names = {h.name for h in source.fits.hdus}
    return [n[: -len("_WAVELENGTH")] for n in names
            if n.endswith("_WAVELENGTH") and n[: -len("_WAVELENGTH")] + "_FLUX" in names]


def identify_desi_coadd(source: Source) -> bool:
    """A FITS whose HDU1 is the FIBERMAP table (as DESI writes them) and that has at least one
    X_WAVELENGTH/X_FLUX camera pair."""
    if not source.is_fits:
        return False
    hdu1 = source.fits.get(1)
    return hdu1 is not None and hdu1.name == "FIBERMAP" and bool(_cameras(source))


def _camera(source: Source, cam: str, ntarget: int) -> tuple[np.ndarray, ...]:
    f = source.fits
    wave = f[f"{cam}_WAVELENGTH"].image().astype(np.float64).reshape(-1)
    flux = f[f"{cam}_FLUX"].image()
    ivar = f[f"{cam}_IVAR"].image() if f.get(f"{cam}_IVAR") else None
    if flux.ndim == 1:
        flux = flux[None, :]
    if flux.shape != (ntarget, wave.shape[0]):
        raise SpectrumError("bad_shape", f"{cam}_FLUX {flux.shape}, expected "
                            f"({ntarget}, {wave.shape[0]})", source=source.name)
    ivar = np.ones(flux.shape) if ivar is None else ivar.reshape(flux.shape[0], -1)
    if ivar.shape != flux.shape:
        raise SpectrumError("bad_shape", f"{cam}_IVAR {ivar.shape} vs flux {flux.shape}",
                            source=source.name)
    bad = np.zeros(flux.shape, dtype=bool)
    mhdu = f.get(f"{cam}_MASK")
    if mhdu is not None:
        if mhdu.is_compressed:
            zshape = tuple(mhdu.header.int(f"ZNAXIS{i}", 0, source=source.name)
                           for i in (2, 1))
            if zshape != flux.shape:
                raise SpectrumError("bad_shape", f"{cam}_MASK {zshape} vs flux {flux.shape}",
                                    source=source.name)
            mask = np.asarray(source.hdu(f"{cam}_MASK").data)
        else:
            mask = mhdu.image()
        if mask.shape != flux.shape:
            raise SpectrumError("bad_shape", f"{cam}_MASK {mask.shape} vs flux {flux.shape}",
                                source=source.name)
        bad = mask != 0
    return wave, flux, ivar, bad


def read_desi_coadd(source: Source) -> list[Spectrum]:
    fibermap = source.fits["FIBERMAP"]
    ntarget = fibermap.nrows
    if ntarget == 0:
        raise SpectrumError("empty_spectrum", "FIBERMAP has no rows", source=source.name)
    targetid = numeric_column(fibermap, "TARGETID", kinds="iu")
    if targetid.ndim != 1:
        raise SpectrumError("bad_shape", "TARGETID must be a scalar column", source=source.name)
    cams = [_camera(source, c, ntarget) for c in sorted(_cameras(source))]
    keys = np.concatenate([np.round(c[0] / MERGE_TOL) for c in cams])
    union, inverse = np.unique(keys, return_inverse=True)
    npix = union.shape[0]
    wave = np.empty(npix)
    num = np.zeros((ntarget, npix))
    den = np.zeros((ntarget, npix))
    start = 0
    for w, flux, ivar, bad in cams:
        idx = inverse[start : start + w.shape[0]]
        start += w.shape[0]
        if np.unique(idx).shape[0] != idx.shape[0]:
            raise SpectrumError("wavelength_not_increasing", "camera wavelengths repeat",
                                source=source.name)
        wave[idx] = w
        f = flux.astype(np.float64)
        weight = np.where(bad | ~np.isfinite(f), 0.0, ivar.astype(np.float64))
        weight[~np.isfinite(weight) | (weight < 0)] = 0.0
        num[:, idx] += weight * np.where(weight > 0, f, 0.0)
        den[:, idx] += weight
    good = den > 0
    flux_all = np.divide(num, den, out=np.zeros_like(num), where=good)
    base = {"survey": "desi"}
    base.update({f"desi_{k}": v for k, v in
                 header_meta(source.fits[0].header, ("SURVEY", "PROGRAM", "SPGRP")).items()})
    ra = _optional(fibermap, "TARGET_RA")
    dec = _optional(fibermap, "TARGET_DEC")
    out = []
    for i in range(ntarget):
        meta = dict(base, object_id=str(int(targetid[i])), targetid=int(targetid[i]))
        if ra is not None and dec is not None:
            meta["ra"], meta["dec"] = plain(ra[i]), plain(dec[i])
        out.append(make_spectrum(wave, flux_all[i], den[i], ~good[i], meta, source=source.name))
    return out


def _optional(hdu, name: str) -> np.ndarray | None:
    if name.upper() not in hdu.columns:
        return None
    arr = numeric_column(hdu, name)
    return arr if arr.ndim == 1 else None


register_reader("desi-coadd", identify_desi_coadd, read_desi_coadd, priority=10,
                description="DESI coadd-*/spectra-* (B/R/Z merged, one spectrum per target)")
