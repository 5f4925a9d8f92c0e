"""The Specula exposure container: a whole exposure (~2,400 fibres) in one FITS request.

Why our own container: DESI's layout needs six HDUs per camera and SDSS's spPlate an image
per quantity; a pipeline that wants to send one exposure needs one table it can write with
any FITS library. Layout (version 1):

- HDU0 (primary, no data): ``SPECFMT = 'specula-exposure'``, ``SPECVER = 1``,
  ``NFIBRE`` = number of rows; optional ``SURVEY``, ``EXPID``.
- HDU1 ``WAVELENGTH`` (IMAGE, float64, ``(npix,)``): the shared vacuum-Å grid of every fibre.
  Omitted when fibres have their own grids (then the table has a ``WAVE`` column).
- HDU2 ``FIBRES`` (BINTABLE, one row per fibre): ``OBJECT_ID`` (A32), ``FIBRE`` (J),
  ``FLUX`` (npix E), ``IVAR`` (npix E, 0 = no information), optional ``MASK`` (npix B,
  non-zero = bad pixel), optional ``WAVE`` (npix D, per-fibre vacuum Å).

2,436 fibres × 4,076 pixels × 9 bytes = 89 MB, inside the 128 MiB input limit; gzip of the
whole file is accepted (bounded by the same limit). Read with the zero-copy FITS view: the
table is one buffer; the shared grid is validated once and the fibres' pixels a block of
rows at a time (``make_spectra``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.io import fits

from service.io.source import Source

from ..errors import SpectrumError
from ..registry import register_reader
from ..spectrum import Spectrum, make_spectra, make_spectrum
from ._common import header_meta, numeric_column

FORMAT_NAME = "specula-exposure"
VERSION = 1


def identify_exposure(source: Source) -> bool:
    """Primary header ``SPECFMT = 'specula-exposure'`` and a FIBRES table."""
    if not source.is_fits:
        return False
    f = source.fits
    return (str(f[0].header.get("SPECFMT", "")).strip().lower() == FORMAT_NAME
            and f.get("FIBRES") is not None)


def read_exposure(source: Source) -> list[Spectrum]:
    f = source.fits
    primary = f[0].header
    version = primary.get("SPECVER", VERSION)
    if version != VERSION:
        raise SpectrumError("corrupt_file", f"SPECVER = {version!r}, expected {VERSION}",
                            source=source.name)
    table = f["FIBRES"]
    n = table.nrows
    flux = table.column("FLUX")
    ivar = table.column("IVAR")
    if flux.ndim != 2 or ivar.shape != flux.shape:
        raise SpectrumError("bad_shape", f"FLUX {flux.shape}, IVAR {ivar.shape}",
                            source=source.name)
    npix = flux.shape[1]
    mask = table.column("MASK") if "MASK" in table.columns else None
    if mask is not None and mask.shape != flux.shape:
        raise SpectrumError("bad_shape", f"MASK {mask.shape} vs FLUX {flux.shape}",
                            source=source.name)
    if "WAVE" in table.columns:
        waves = table.column("WAVE")
        if waves.shape != flux.shape:
            raise SpectrumError("bad_shape", f"WAVE {waves.shape} vs FLUX {flux.shape}",
                                source=source.name)
    else:
        grid = f["WAVELENGTH"].image().reshape(-1).astype(np.float64)
        if grid.shape[0] != npix:
            raise SpectrumError("bad_shape", f"WAVELENGTH has {grid.shape[0]} pixels, FLUX "
                                f"{npix}", source=source.name)
        waves = None
    ids = table.column("OBJECT_ID") if "OBJECT_ID" in table.columns else None
    if ids is not None and (ids.dtype.kind != "S" or ids.ndim != 1):
        raise SpectrumError("bad_dtype", "OBJECT_ID must be a text column", source=source.name)
    fibres = numeric_column(table, "FIBRE", kinds="iu") if "FIBRE" in table.columns else None
    if fibres is not None and fibres.ndim != 1:
        raise SpectrumError("bad_shape", "FIBRE must be a scalar column", source=source.name)
    base = {"survey": "specula-exposure", **header_meta(primary, ("SURVEY", "EXPID"))}
    metas = []
    for i in range(n):
        meta = dict(base)
        meta["object_id"] = ids[i].decode("ascii", "replace").strip() if ids is not None else ""
        if fibres is not None:
            meta["fibre"] = int(fibres[i])
        metas.append(meta)
    bad = (mask != 0) if mask is not None else None
    if waves is None:  # the usual case: one grid for every fibre, checked once
        return make_spectra(grid, flux, ivar, bad, metas, source=source.name)
    # per-fibre grids: rows are zero-copy views of the input, converted one by one
    return [make_spectrum(waves[i], flux[i], ivar[i], None if bad is None else bad[i],
                          metas[i], source=source.name) for i in range(n)]


def write_exposure(spectra: Sequence[Spectrum], *, header: dict[str, Any] | None = None) -> bytes:
    """The container bytes for ``spectra`` (shared grid when all grids are equal).

    Raises ``bad_shape`` when the spectra have different pixel counts (no common layout).
    """
    if not spectra:
        raise SpectrumError("empty_spectrum", "no spectra to write")
    npix = spectra[0].npix
    if any(s.npix != npix for s in spectra):
        raise SpectrumError("bad_shape", "all fibres of an exposure need the same pixel count")
    shared = all(np.array_equal(s.wavelength, spectra[0].wavelength) for s in spectra)
    n = len(spectra)
    cols = [
        fits.Column("OBJECT_ID", "32A", array=np.array([s.object_id[:32] for s in spectra])),
        fits.Column("FIBRE", "J", array=np.array(
            [int(s.meta.get("fibre", i)) for i, s in enumerate(spectra)], dtype=np.int32)),
        fits.Column("FLUX", f"{npix}E", array=np.stack([s.flux for s in spectra])
                    .astype(np.float32).reshape(n, npix)),
        fits.Column("IVAR", f"{npix}E", array=np.stack([s.ivar for s in spectra])
                    .astype(np.float32).reshape(n, npix)),
        fits.Column("MASK", f"{npix}B", array=np.stack([s.mask for s in spectra])
                    .astype(np.uint8).reshape(n, npix)),
    ]
    if not shared:
        cols.append(fits.Column("WAVE", f"{npix}D", array=np.stack(
            [s.wavelength for s in spectra]).reshape(n, npix)))
    primary = fits.PrimaryHDU()
    primary.header["SPECFMT"] = (FORMAT_NAME, "Specula exposure container")
    primary.header["SPECVER"] = (VERSION, "container version")
    primary.header["NFIBRE"] = (n, "rows in FIBRES")
    for key, value in (header or {}).items():
        primary.header[key] = value
    hdus = [primary]
    if shared:
        hdus.append(fits.ImageHDU(np.asarray(spectra[0].wavelength, np.float64),
                                  name="WAVELENGTH"))
    hdus.append(fits.BinTableHDU.from_columns(cols, name="FIBRES"))
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


register_reader("specula-exposure", identify_exposure, read_exposure, priority=20,
                description="Specula exposure container (one FITS row per fibre)")
