"""SDSS-I/II ``spSpec-MJD-PLATE-FIBER.fit`` (DR1–DR7) → one :class:`Spectrum`.

Layout (https://classic.sdss.org/dr7/dm/flatFiles/spSpec.php): the primary HDU is a float32
image of rows — 0 flux [1e-17 erg/s/cm²/Å], 1 continuum-subtracted flux, 2 1σ error,
3 pixel mask (SPPIXMASK bits), 4 sky in later reductions; the wavelength is log-linear,
log10 λ = COEFF0 + COEFF1·i, vacuum unless the header says ``VACUUM = F`` (then converted).
Bad pixels: error ≤ 0 (ivar 0) or any mask bit set (``mask != 0``, as specutils does).
"""

from __future__ import annotations

import re

import numpy as np

from service.io.fitsview import Header
from service.io.source import Source

from ..errors import SpectrumError
from ..registry import register_reader
from ..spectrum import Spectrum, make_spectrum
from ..wavelength import air_to_vacuum, loglam_to_wavelength
from ._common import header_meta

_NAME = re.compile(r"spSpec-(\d{5})-(\d{4})-(\d{3})")
# SPEC_CLN: the DR7 spectro1d class code
SPEC_CLN = {0: "UNKNOWN", 1: "STAR", 2: "GALAXY", 3: "QSO", 4: "QSO", 5: "SKY", 6: "STAR",
            7: "GALAXY"}


def identify_sdss_spspec(source: Source) -> bool:
    """A FITS whose primary HDU is a 2D image of ≥ 4 rows with COEFF0/COEFF1."""
    if not source.is_fits:
        return False
    h = source.fits[0].header
    shape = source.fits[0].shape
    return len(shape) == 2 and shape[0] >= 4 and "COEFF0" in h and "COEFF1" in h


def is_eigen_template(header) -> bool:
    """SDSS's spEigen* template files share spSpec's layout (a primary image with COEFF0/
    COEFF1) but hold one basis vector per row (EIGENn or NAMEn keys) and no error or mask:
    read as a spectrum they would be a fully masked one, so they are refused by name."""
    return "EIGEN0" in header or "NAME0" in header


def coeff_wavelength(h: Header, n: int, source: Source) -> np.ndarray:
    """The vacuum-Å wavelengths of ``n`` pixels of an idlspec2d image (spSpec, spPlate):
    log10 λ = COEFF0 + COEFF1·i, converted from air when the header says ``VACUUM = F``.
    ``corrupt_file`` when COEFF0/COEFF1 are missing or not numbers, ``bad_units`` when they
    are not a log10-Å solution."""
    c0, c1 = h.get("COEFF0"), h.get("COEFF1")
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in (c0, c1)):
        raise SpectrumError("corrupt_file", "COEFF0/COEFF1 missing or not numbers",
                            source=source.name)
    if not (c1 > 0 and 0 < c0 < 6):
        raise SpectrumError("bad_units", f"COEFF0 = {c0}, COEFF1 = {c1}: not log10 Å",
                            source=source.name)
    wave = loglam_to_wavelength(c0 + c1 * np.arange(n, dtype=np.float64))
    if h.get("VACUUM") is False:
        wave = air_to_vacuum(wave)
    return wave


def read_sdss_spspec(source: Source) -> list[Spectrum]:
    primary = source.fits[0]
    h = primary.header
    if is_eigen_template(h):
        raise SpectrumError("unknown_format", "an SDSS eigen-template (spEigen*: one basis "
                            "vector per row), not an observed spectrum", source=source.name)
    img = primary.image()
    if img.ndim != 2 or img.shape[0] < 4:
        raise SpectrumError("bad_shape", f"primary image has shape {img.shape}",
                            source=source.name)
    n = img.shape[1]
    wave = coeff_wavelength(h, n, source)
    err = img[2].astype(np.float64)
    ivar = np.divide(1.0, err * err, out=np.zeros(n), where=err > 0)
    mask = img[3] != 0
    meta = {"survey": "sdss", "object_id": _object_id(source, h)}
    meta.update(header_meta(h, ("Z", "Z_ERR", "Z_STATUS", "SPEC_CLN", "NAME")))
    if isinstance(meta.get("spec_cln"), int):
        meta["class"] = SPEC_CLN.get(meta["spec_cln"], "UNKNOWN")
    ra, dec = h.get("RAOBJ"), h.get("DECOBJ")
    if isinstance(ra, (int, float)) and isinstance(dec, (int, float)):
        meta["ra"], meta["dec"] = float(ra), float(dec)
    return [make_spectrum(wave, img[0], ivar, mask, meta, source=source.name)]


def _object_id(source: Source, h) -> str:
    plate, mjd, fiber = (h.get(k) for k in ("PLATEID", "MJD", "FIBERID"))
    if all(isinstance(v, int) for v in (plate, mjd, fiber)):
        return f"{plate:04d}-{mjd:05d}-{fiber:04d}"
    m = _NAME.search(source.name)
    if m:
        mjd_s, plate_s, fiber_s = m.groups()
        return f"{int(plate_s):04d}-{int(mjd_s):05d}-{int(fiber_s):04d}"
    return ""


register_reader("sdss-spspec", identify_sdss_spspec, read_sdss_spspec, priority=10,
                description="SDSS-I/II spSpec (primary image rows, COEFF0/COEFF1)")
