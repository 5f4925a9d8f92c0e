"""Multi-object files for the tests, written with astropy from the published data models
(independently of the readers): an SDSS spPlate built around the real SDSS spectrum in
../shared, and an ESO SDP table of several rows.

No real spPlate ships with the repository (a real one is 60–110 MB). ``real_plate`` writes
rows 60–67 of plate 1198, MJD 52669 — the plate of ../shared's ``spec-1198-52669-0063.fits``,
whose header, flux, inverse variance, and-mask, dispersion and sky it reuses — in the layout
of https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/PLATE4/spPlate.html as
idlspec2d's ``spcoadd_v5.pro`` writes it: HDU0 flux (NFIBER × NPIX float32, COEFF0/COEFF1),
IVAR, ANDMASK (int32), ORMASK, WAVEDISP, PLUGMAP (one row per fibre), SKY. A real plate has
all 640 rows with FIBERID = row + 1; this cut-out keeps the real FIBERIDs 60–67, so that
fibre 63 is the real spectrum under its real id.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

PLATE, MJD = 1198, 52669
FIBRES = tuple(range(60, 68))
REAL_FIBRE = 63  # the real spectrum, untouched
SKY_FIBRE = 61  # OBJTYPE 'SKY': sky-subtracted noise
DEAD_FIBRE = 65  # a broken fibre: every pixel masked, ivar 0
BRIGHTSKY_FIBRE = 66  # the real spectrum with BRIGHTSKY set (ivar > 0) around 5577 Å
NPIX = 3850
COEFF0, COEFF1 = 3.5791, 1e-4  # the real plate's grid (the spec file's header says so)
# SPPIXMASK bits (datamodel: idlutils sdssMaskbits.par)
BADTRACE, FULLREJECT, BRIGHTSKY, NODATA = 1 << 1, 1 << 18, 1 << 23, 1 << 24
# primary-header keywords of a spec file that describe its one fibre, not the plate
_PER_FIBRE_KEYS = ("PLUG_RA", "PLUG_DEC", "SPEC_ID", "FIBERID")


@dataclass(frozen=True)
class Fibre:
    """One row of a plate: the plug-map entry and the coadded pixels."""

    fiberid: int
    objtype: str
    flux: np.ndarray
    ivar: np.ndarray
    and_mask: np.ndarray
    ra: float
    dec: float
    wdisp: np.ndarray | None = None
    sky: np.ndarray | None = None


def _bytes(hdus: list) -> bytes:
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def plate_header(spec_header: fits.Header, coeff0: float = COEFF0,
                 coeff1: float = COEFF1) -> fits.Header:
    """An spPlate primary header from a spec file's (which spcoadd copied from the plate):
    the per-fibre keywords dropped, the IRAF log-linear keywords spcoadd adds put back."""
    h = fits.Header()
    for card in spec_header.cards:
        if card.keyword in _PER_FIBRE_KEYS or card.keyword in (
                "SIMPLE", "BITPIX", "NAXIS", "EXTEND") or card.keyword.startswith("NAXIS"):
            continue
        h.append(card)
    h["COEFF0"], h["COEFF1"] = coeff0, coeff1
    h["CRVAL1"], h["CD1_1"], h["CRPIX1"] = coeff0, coeff1, 1
    h["CTYPE1"], h["DC-FLAG"] = "LINEAR", 1
    h["BUNIT"] = "1E-17 erg/cm^2/s/Ang"
    return h


def write_spplate(header: fits.Header, fibres: Sequence[Fibre], *,
                  andmask_dtype: type = np.int32) -> bytes:
    """spPlate: HDU0 flux, IVAR, ANDMASK, ORMASK, WAVEDISP, PLUGMAP, SKY (v5 layout)."""
    flux = np.stack([f.flux for f in fibres]).astype(np.float32)
    shape = flux.shape
    ivar = np.stack([f.ivar for f in fibres]).astype(np.float32)
    and_mask = np.stack([f.and_mask for f in fibres]).astype(andmask_dtype)
    wdisp = np.stack([f.wdisp if f.wdisp is not None else np.ones(shape[1]) for f in fibres])
    sky = np.stack([f.sky if f.sky is not None else np.zeros(shape[1]) for f in fibres])
    n = len(fibres)
    primary = fits.PrimaryHDU(flux, header=header)
    ivar_hdu = fits.ImageHDU(ivar, name="IVAR")
    ivar_hdu.header["BUNIT"] = "1/(1E-17 erg/cm^2/s/Ang)^2"
    wdisp_hdu = fits.ImageHDU(wdisp.astype(np.float32), name="WAVEDISP")
    wdisp_hdu.header["BUNIT"] = "pixels"
    plugmap = fits.BinTableHDU.from_columns([
        fits.Column("OBJID", "5J", array=np.tile(np.array([2830, 0, 2, 176, 32]), (n, 1))),
        fits.Column("HOLETYPE", "6A", array=np.array(["OBJECT"] * n)),
        fits.Column("RA", "D", array=np.array([f.ra for f in fibres])),
        fits.Column("DEC", "D", array=np.array([f.dec for f in fibres])),
        fits.Column("MAG", "5E", array=np.tile(np.array([18.3, 17.4, 17.3, 17.3, 17.3]),
                                                (n, 1))),
        fits.Column("STARL", "E", array=np.zeros(n)),
        fits.Column("EXPL", "E", array=np.zeros(n)),
        fits.Column("DEVAUCL", "E", array=np.zeros(n)),
        fits.Column("OBJTYPE", "16A", array=np.array([f.objtype for f in fibres])),
        fits.Column("XFOCAL", "D", array=np.linspace(150.0, 160.0, n)),
        fits.Column("YFOCAL", "D", array=np.linspace(-95.0, -90.0, n)),
        fits.Column("SPECTROGRAPHID", "J", array=np.ones(n, np.int32)),
        fits.Column("FIBERID", "J", array=np.array([f.fiberid for f in fibres], np.int32)),
        fits.Column("THROUGHPUT", "J", array=np.zeros(n, np.int32)),
        fits.Column("PRIMTARGET", "J", array=np.full(n, 1056768, np.int32)),
        fits.Column("SECTARGET", "J", array=np.zeros(n, np.int32)),
        fits.Column("OFFSETID", "J", array=np.zeros(n, np.int32)),
        fits.Column("SCI_EXPTIME", "E", array=np.full(n, 2160.3)),
        fits.Column("SOURCETYPE", "7A", array=np.array(["-"] * n)),
        fits.Column("LAMBDA_EFF", "E", array=np.full(n, 5400.0)),
        fits.Column("ZOFFSET", "E", array=np.zeros(n)),
    ], name="PLUGMAP")
    return _bytes([primary, ivar_hdu, fits.ImageHDU(and_mask, name="ANDMASK"),
                   fits.ImageHDU(and_mask, name="ORMASK"), wdisp_hdu, plugmap,
                   fits.ImageHDU(sky.astype(np.float32), name="SKY")])


def real_plate(spec_path: Path, seed: int = 1198) -> bytes:
    """The eight-fibre cut-out of plate 1198 described in the module docstring.

    Fibres: 60 a fainter copy of the real star, 61 a sky fibre (noise at the real errors),
    62 a brighter copy, 63 the real spectrum, 64 the real one with its red end lost
    (FULLREJECT, ivar 0), 65 a dead fibre (BADTRACE|FULLREJECT everywhere), 66 the real one
    with BRIGHTSKY over 5560–5600 Å (ivar kept > 0), 67 a much fainter copy. Pixels outside
    the real spectrum's range are NODATA with ivar 0, as in a real plate."""
    rng = np.random.default_rng(seed)
    with fits.open(spec_path) as h:
        header = plate_header(h[0].header)
        coadd = h[1].data
        start = round((float(coadd["loglam"][0]) - COEFF0) / COEFF1)
        cols = {k: np.asarray(coadd[k], np.float64) for k in ("flux", "ivar", "wdisp", "sky")}
        am = np.asarray(coadd["and_mask"], np.int64)
        ra0, dec0 = float(h[0].header["PLUG_RA"]), float(h[0].header["PLUG_DEC"])
    sl = slice(start, start + am.shape[0])

    def placed(values: np.ndarray, outside: float = 0.0) -> np.ndarray:
        out = np.full(NPIX, outside)
        out[sl] = values
        return out

    flux, ivar = placed(cols["flux"]), placed(cols["ivar"])
    and_mask = placed(am, NODATA).astype(np.int64)
    sigma = np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), 0.0)
    wave = 10 ** (COEFF0 + COEFF1 * np.arange(NPIX))

    def scaled(a: float) -> tuple[np.ndarray, np.ndarray]:
        """a × the star plus a new noise draw at the real errors: variance (a² + 1) σ²."""
        noisy = a * flux + rng.normal(0.0, 1.0, NPIX) * sigma
        return np.where(ivar > 0, noisy, 0.0), ivar / (1 + a * a)

    def fibre(fiberid: int, objtype: str, f: np.ndarray, iv: np.ndarray,
              m: np.ndarray) -> Fibre:
        k = fiberid - REAL_FIBRE
        return Fibre(fiberid, objtype, f, iv, m, ra0 + 0.01 * k, dec0 - 0.01 * k,
                     placed(cols["wdisp"], 0.0), placed(cols["sky"], 0.0))

    red_lost = and_mask.copy()
    red_lost[2900:] |= FULLREJECT
    bright = and_mask.copy()
    bright[(wave > 5560) & (wave < 5600)] |= BRIGHTSKY
    sky_flux = np.where(ivar > 0, rng.normal(0.0, 1.0, NPIX) * sigma, 0.0)
    fibres = [
        fibre(60, "SPECTROPHOTO_STD", *scaled(0.6), and_mask),
        fibre(61, "SKY", sky_flux, ivar, and_mask),
        fibre(62, "STAR_BHB", *scaled(1.5), and_mask),
        fibre(REAL_FIBRE, "STAR_BHB", flux, ivar, and_mask),
        fibre(64, "REDDEN_STD", flux, np.where(np.arange(NPIX) >= 2900, 0.0, ivar), red_lost),
        fibre(DEAD_FIBRE, "GALAXY", np.zeros(NPIX), np.zeros(NPIX),
              np.full(NPIX, BADTRACE | FULLREJECT)),
        fibre(BRIGHTSKY_FIBRE, "STAR_BHB", flux, ivar, bright),
        fibre(67, "SERENDIPITY_BLUE", *scaled(0.3), and_mask),
    ]
    assert [f.fiberid for f in fibres] == list(FIBRES)
    return write_spplate(header, fibres)


def write_eso_sdp_rows(waves_nm: np.ndarray, fluxes: np.ndarray, errs: np.ndarray,
                       quals: np.ndarray, *, ids: Sequence[str] | None = None,
                       id_column: str = "OBJECT", obj: str = "OB 1234567") -> bytes:
    """An ESO SDP spectrum table of one row per object (WAVE in nm, FLUX, ERR, QUAL vector
    columns), optionally with a per-row id column; primary PRODCATG = SCIENCE.SPECTRUM."""
    n, npix = fluxes.shape
    unit = "erg cm**(-2) s**(-1) angstrom**(-1)"
    cols = [
        fits.Column("WAVE", f"{npix}D", unit="nm", array=waves_nm),
        fits.Column("FLUX", f"{npix}E", unit=unit, array=fluxes.astype(np.float32)),
        fits.Column("ERR", f"{npix}E", unit=unit, array=errs.astype(np.float32)),
        fits.Column("QUAL", f"{npix}J", array=quals.astype(np.int32)),
        fits.Column("RA", "D", unit="deg", array=np.linspace(10.0, 10.1, n)),
        fits.Column("DEC", "D", unit="deg", array=np.linspace(-20.0, -20.1, n)),
    ]
    if ids is not None:
        cols.insert(0, fits.Column(id_column, "32A", array=np.array(list(ids))))
    table = fits.BinTableHDU.from_columns(cols, name="SPECTRUM")
    p = fits.PrimaryHDU()
    p.header["PRODCATG"] = "SCIENCE.SPECTRUM"
    p.header["OBJECT"] = obj
    p.header["TELESCOP"], p.header["INSTRUME"] = "ESO-VISTA", "4MOST"
    return _bytes([p, table])
