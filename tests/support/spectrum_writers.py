"""Test fixtures' source: write a Spectrum in each survey format with astropy.

These writers follow the published data models (see each reader's docstring), independently
of the readers' code, so a round trip checks the reader against the format, not itself.
"""

from __future__ import annotations

import io
import json

import numpy as np
from astropy.io import fits

from service.spectra import Spectrum, make_spectrum


def _bytes(hdus: list) -> bytes:
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def sdss_like_spectrum(n: int = 3800, loglam0: float = 3.5797, seed: int = 0,
                       masked: slice | None = slice(1000, 1040)) -> Spectrum:
    """A log-linear (Δlog10λ = 1e-4) spectrum with a continuum, lines, noise and a mask."""
    rng = np.random.default_rng(seed)
    loglam = (loglam0 + 1e-4 * np.arange(n)).astype(np.float32).astype(np.float64)
    wave = 10**loglam
    flux = 20 + 5 * np.sin(wave / 300) + 30 * np.exp(-0.5 * ((wave - 6564.6) / 4) ** 2)
    flux = flux + rng.normal(0, 0.5, n)
    ivar = rng.uniform(2, 6, n)
    mask = np.zeros(n, bool)
    if masked is not None:
        mask[masked] = True
    return make_spectrum(wave, flux.astype(np.float32), ivar.astype(np.float32), mask,
                         {"object_id": "0001-50000-0001"})


def write_sdss_spec(s: Spectrum, *, variant: str = "full", plate: int = 1, mjd: int = 50000,
                    fiber: int = 1, and_mask: np.ndarray | None = None,
                    specobj: dict | None = None) -> bytes:
    """spec-PLATE-MJD-FIBER: variant 'full' (COADD, SPECOBJ, SPZLINE, an exposure), 'lite'
    (COADD, SPECOBJ, SPZLINE) or 'coadd-only' (COADD with flux/loglam/ivar only)."""
    n = s.npix
    primary = fits.PrimaryHDU()
    h = primary.header
    h["PLATEID"], h["MJD"], h["FIBERID"] = plate, mjd, fiber
    h["PLUG_RA"], h["PLUG_DEC"] = 150.5, 2.25
    h["VACUUM"] = True
    ivar = np.where(s.mask, 0.0, s.ivar).astype(np.float32)
    am = and_mask if and_mask is not None else np.zeros(n, np.int32)
    cols = [fits.Column("flux", "E", array=s.flux.astype(np.float32)),
            fits.Column("loglam", "E", array=np.log10(s.wavelength).astype(np.float32)),
            fits.Column("ivar", "E", array=ivar)]
    if variant != "coadd-only":
        cols += [fits.Column("and_mask", "J", array=am.astype(np.int32)),
                 fits.Column("or_mask", "J", array=am.astype(np.int32)),
                 fits.Column("wdisp", "E", array=np.ones(n, np.float32)),
                 fits.Column("sky", "E", array=np.zeros(n, np.float32)),
                 fits.Column("model", "E", array=s.flux.astype(np.float32))]
    hdus = [primary, fits.BinTableHDU.from_columns(cols, name="COADD")]
    if variant in ("full", "lite"):
        so = {"CLASS": "GALAXY", "SUBCLASS": "STARFORMING", "Z": 0.1234, "ZWARNING": 0,
              "PLUG_RA": 150.5, "PLUG_DEC": 2.25, **(specobj or {})}
        scols = []
        for k, v in so.items():
            if isinstance(v, str):
                scols.append(fits.Column(k, f"{max(len(v), 1)}A", array=np.array([v])))
            elif isinstance(v, int):
                scols.append(fits.Column(k, "J", array=np.array([v], np.int32)))
            else:
                scols.append(fits.Column(k, "D", array=np.array([v], np.float64)))
        hdus.append(fits.BinTableHDU.from_columns(scols, name="SPECOBJ"))
        hdus.append(fits.BinTableHDU.from_columns(
            [fits.Column("LINENAME", "13A", array=np.array(["H_alpha"]))], name="SPZLINE"))
    if variant == "full":
        hdus.append(fits.BinTableHDU.from_columns(
            [fits.Column("flux", "E", array=s.flux[:100].astype(np.float32))],
            name="B1-00012345-00012346-00012347"))
    return _bytes(hdus)


def write_spspec(s: Spectrum, *, coeff0: float, air: bool = False, mask_row=None) -> bytes:
    """SDSS-I/II spSpec: primary image rows flux, continuum-subtracted, error, mask, sky."""
    n = s.npix
    err = np.where(s.ivar > 0, 1 / np.sqrt(np.where(s.ivar > 0, s.ivar, 1)), 0.0)
    mask = s.mask.astype(np.float32) if mask_row is None else mask_row
    img = np.vstack([s.flux, s.flux - np.median(s.flux), err, mask, np.zeros(n)])
    p = fits.PrimaryHDU(img.astype(np.float32))
    p.header["COEFF0"], p.header["COEFF1"] = coeff0, 1e-4
    p.header["VACUUM"] = not air
    p.header["PLATEID"], p.header["MJD"], p.header["FIBERID"] = 266, 51630, 7
    p.header["SPEC_CLN"], p.header["Z"] = 3, 1.52
    p.header["RAOBJ"], p.header["DECOBJ"] = 145.0, -0.5
    return _bytes([p])


def write_eso_sdp(s: Spectrum, *, unit: str = "nm", air: bool = False,
                  err_unit: str | None = None, wave_values: np.ndarray | None = None) -> bytes:
    """ESO Phase 3 1D spectrum: one-row table with WAVE/FLUX/ERR/QUAL vector columns."""
    n = s.npix
    wave = s.wavelength if wave_values is None else wave_values
    factor = {"nm": 0.1, "Angstrom": 1.0, "angstrom": 1.0, "um": 1e-4}[unit]
    err = np.where(s.ivar > 0, 1 / np.sqrt(np.where(s.ivar > 0, s.ivar, 1)), 0.0)
    err_factor = 1.0 if err_unit in (None, "erg cm**(-2) s**(-1) angstrom**(-1)") else 1e-7
    cols = [
        fits.Column("WAVE", f"{n}D", unit=unit, array=(wave * factor)[None, :]),
        fits.Column("FLUX", f"{n}E", unit="erg cm**(-2) s**(-1) angstrom**(-1)",
                    array=s.flux[None, :].astype(np.float32)),
        fits.Column("ERR", f"{n}E", unit=err_unit or "erg cm**(-2) s**(-1) angstrom**(-1)",
                    array=(err / err_factor)[None, :].astype(np.float32)),
        fits.Column("QUAL", f"{n}J", array=s.mask[None, :].astype(np.int32)),
    ]
    table = fits.BinTableHDU.from_columns(cols, name="SPECTRUM")
    table.header["TUCD1"] = "em.wl;obs.atmos" if air else "em.wl"
    p = fits.PrimaryHDU()
    p.header["PRODCATG"] = "SCIENCE.SPECTRUM"
    p.header["OBJECT"] = "NGC 1234"
    p.header["RA"], p.header["DEC"] = 10.5, -20.25
    return _bytes([p, table])


def write_desi(spectra_by_camera: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray]],
               targetids: list[int]) -> bytes:
    """DESI coadd layout: FIBERMAP + per camera WAVELENGTH/FLUX/IVAR/MASK (ntarget, npix)."""
    p = fits.PrimaryHDU()
    fm = fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=np.array(targetids, np.int64)),
        fits.Column("TARGET_RA", "D", array=np.linspace(10, 11, len(targetids))),
        fits.Column("TARGET_DEC", "D", array=np.linspace(-1, 1, len(targetids))),
    ], name="FIBERMAP")
    hdus = [p, fm]
    for cam, (wave, flux, ivar, mask) in spectra_by_camera.items():
        hdus += [fits.ImageHDU(wave.astype(np.float64), name=f"{cam}_WAVELENGTH"),
                 fits.ImageHDU(flux.astype(np.float32), name=f"{cam}_FLUX"),
                 fits.ImageHDU(ivar.astype(np.float32), name=f"{cam}_IVAR"),
                 fits.ImageHDU(mask.astype(np.uint32), name=f"{cam}_MASK")]
    return _bytes(hdus)


def write_json(spectra: list[Spectrum], *, error: bool = False) -> bytes:
    def one(s: Spectrum) -> dict:
        d = {"wavelength": s.wavelength.tolist(), "flux": s.flux.tolist(),
             "mask": s.mask.tolist(), "object_id": s.object_id}
        if error:
            d["error"] = np.where(s.ivar > 0, 1 / np.sqrt(np.where(s.ivar > 0, s.ivar, 1)),
                                  0.0).tolist()
        else:
            d["ivar"] = s.ivar.tolist()
        return d
    doc = one(spectra[0]) if len(spectra) == 1 else {"spectra": [one(s) for s in spectra]}
    return json.dumps(doc).encode()


def write_npy(s: Spectrum, *, rows: int = 4, structured: bool = False) -> bytes:
    buf = io.BytesIO()
    if structured:
        arr = np.zeros(s.npix, dtype=[("wavelength", "f8"), ("flux", "f4"), ("ivar", "f4"),
                                      ("mask", "u1")])
        arr["wavelength"], arr["flux"], arr["ivar"], arr["mask"] = (
            s.wavelength, s.flux, s.ivar, s.mask)
    else:
        arr = np.vstack([s.wavelength, s.flux, s.ivar, s.mask.astype(float)][:rows])
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
