"""The physics blocks every simulated population uses: line lists, templates, dust, profiles.

Why one module below the populations: galaxies, quasars, stars and the instrument all need the
same vacuum line list, the same real pipeline templates (``../shared/data/templates``) and the
same dust laws and line profiles; keeping them here lets the imports flow one way
(astro → galaxies / quasars / instrument → populations → simulate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.ndimage import gaussian_filter1d, median_filter

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
C_KMS = 299792.458
LN10 = math.log(10.0)


# ------------------------------------------------------------------------------- line lists
def air_to_vacuum(lam_air: np.ndarray) -> np.ndarray:
    """Morton (1991) / IAU air→vacuum, applied to λ ≥ 2000 Å only (as the line lists are)."""
    lam = np.asarray(lam_air, dtype=np.float64)
    s2 = (1e4 / lam) ** 2
    n = 1.0 + 6.4328e-5 + 2.94981e-2 / (146.0 - s2) + 2.5540e-4 / (41.0 - s2)
    return np.where(lam >= 2000.0, lam * n, lam)


@cache
def emission_lines() -> dict[str, float]:
    """name → vacuum rest wavelength from the SDSS pipeline's emlines.par."""
    out: dict[str, float] = {}
    for line in (SHARED / "lines" / "emlines.par").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line.startswith("emlineid"):
            continue
        parts = line.split('"')
        lam = float(parts[0].split()[1])
        out[parts[1]] = float(air_to_vacuum(np.array([lam]))[0])
    return out


@cache
def sky_lines() -> np.ndarray:
    """Vacuum wavelengths of night-sky lines: every number in skylines.dat, commented or not.

    The commented entries are the OH forest and Na D lines the pipeline chose not to fit; they
    are still in the sky, so they still leave residuals.
    """
    lams = []
    for line in (SHARED / "lines" / "skylines.dat").read_text().splitlines():
        tok = line.lstrip("#").split()
        if tok:
            try:
                lams.append(float(tok[0]))
            except ValueError:
                pass
    return air_to_vacuum(np.unique(np.array(lams)))


# -------------------------------------------------------------------------------- templates
@dataclass
class EigenSet:
    """Rest-frame eigenspectra on a log grid; ``cont`` is a line-free continuum per vector."""

    loglam: np.ndarray
    dlog: float
    basis: np.ndarray  # (k, n), each row scaled to unit rms
    cont: np.ndarray | None
    scales: tuple[float, ...]  # rms of the random coefficient of vectors 1.. (vector 0 = 1)
    sigma_kms: float  # intrinsic resolution of the templates


@dataclass
class Templates:
    gal: EigenSet
    gal_cont: EigenSet  # spEigenGal with its emission lines interpolated out (line-free basis)
    qso_sdss: EigenSet
    qso_loz: EigenSet
    qso_hiz: EigenSet
    cv: EigenSet
    qso_z: np.ndarray  # the 568 BOSS quasar redshifts behind spEigenQSO
    star_loglam: np.ndarray
    star_flux: np.ndarray  # (123, n) SDSS stellar templates
    star_letter: list[str]
    star_names: list[str]
    rr_loglam: np.ndarray  # Redrock star basis, smoothed to R≈6000 on Δlog10λ = 5e-5
    rr_basis: dict[str, np.ndarray]
    rr_coeff: dict[str, np.ndarray]


def star_letter(name: str) -> str | None:
    """SDSS spEigenStar NAMEi → our subtype (None: not used)."""
    n = name.strip()
    if n.startswith("sd"):
        n = n.lstrip("sd:")
    if "WD" in name:
        return "WD"
    if name.startswith("Carbon"):
        return "CARBON"
    if name.startswith("Ldwarf"):
        return "L"
    if name.startswith("CV"):
        return "CV"
    if n[:1] in "OBAFGKM":
        return n[:1]
    return None


def _eigen(path: Path, scales: tuple[float, ...], cont_width: int, sigma_kms: float,
           log_key: tuple[str, str] = ("COEFF0", "COEFF1"), hdu: int = 0) -> EigenSet:
    with fits.open(path) as h:
        data = np.asarray(h[hdu].data, dtype=np.float64)
        hd = h[hdu].header
        start, step = float(hd[log_key[0]]), float(hd[log_key[1]])
    loglam = start + step * np.arange(data.shape[1])
    rms = np.sqrt(np.mean(data**2, axis=1, keepdims=True))
    basis = data / rms
    if basis[0].mean() < 0:
        basis[0] *= -1
    cont = None
    if cont_width:
        # Line-free continuum per vector (a running median is not linear, but a combination of
        # per-vector continua is close enough to scale line strengths).
        cont = np.stack([median_filter(b, size=cont_width, mode="nearest") for b in basis])
        cont = np.stack([gaussian_filter1d(c, cont_width / 6) for c in cont])
    return EigenSet(loglam, step, basis, cont, scales, sigma_kms)


def _redrock_star(letter: str, loglam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    path = SHARED / "templates" / "desi-redrock" / f"rrtemplate-STAR-{letter}-v0.1.fits"
    with fits.open(path) as h:
        basis = np.asarray(h[0].data, dtype=np.float64)
        lam = float(h[0].header["CRVAL1"]) + float(h[0].header["CDELT1"]) * np.arange(basis.shape[1])
        coeff = np.asarray(h["ARCHETYPE_COEFF"].data, dtype=np.float64)
    # Smooth to R ≈ 6000 at 5000 Å (σ ≈ 0.35 Å ≈ 3.5 px of 0.1 Å) then sample on log λ.
    basis = gaussian_filter1d(basis, 3.5, axis=1)
    out = np.stack([np.interp(10**loglam, lam, b) for b in basis])
    return out, coeff


@lru_cache(maxsize=1)
def load_templates() -> Templates:
    t = SHARED / "templates"
    gal = _eigen(t / "sdss" / "spEigenGal-56436.fits", (0.3, 0.15, 0.08), 0, 65.0)
    gal_cont = line_free(gal)
    qso_sdss = _eigen(t / "sdss" / "spEigenQSO-55732.fits", (0.25, 0.15, 0.1), 301, 65.0)
    rr = ("CRVAL1", "CDELT1")
    qso_loz = _eigen(t / "desi-redrock" / "rrtemplate-QSO-LOZ-v1.1.fits", (0.2, 0.12, 0.08),
                     301, 65.0, rr)
    qso_hiz = _eigen(t / "desi-redrock" / "rrtemplate-QSO-HIZ-v1.1.fits", (0.2, 0.12, 0.08),
                     301, 65.0, rr)
    cv = _eigen(t / "sdss" / "spEigenCVstar-55734.fits", (0.3, 0.2), 0, 65.0)
    with fits.open(t / "sdss" / "spEigenQSO-55732.fits") as h:
        qso_z = np.asarray(h[1].data["REDSHIFT"], dtype=np.float64)
    with fits.open(t / "sdss" / "spEigenStar-55734.fits") as h:
        sflux = np.asarray(h[0].data, dtype=np.float64)
        hd = h[0].header
        sl = float(hd["COEFF0"]) + float(hd["COEFF1"]) * np.arange(sflux.shape[1])
        names = [str(hd[f"NAME{i}"]) for i in range(sflux.shape[0])]
    letters = [star_letter(n) or "" for n in names]
    sflux = sflux / np.median(np.abs(sflux), axis=1, keepdims=True)
    rr_loglam = np.arange(math.log10(3010.0), math.log10(10990.0), 5e-5)
    rr_basis, rr_coeff = {}, {}
    for letter in ["A", "B", "F", "G", "K", "M", "WD"]:
        rr_basis[letter], rr_coeff[letter] = _redrock_star(letter, rr_loglam)
    return Templates(gal, gal_cont, qso_sdss, qso_loz, qso_hiz, cv, qso_z, sl, sflux, letters, names,
                     rr_loglam, rr_basis, rr_coeff)


def line_free(es: EigenSet, half_width_kms: float = 600.0) -> EigenSet:
    """The same eigenspectra with every emlines.par line interpolated over (±600 km/s).

    spEigenGal was built from SDSS galaxies and so carries their mean emission lines; the
    population models put in their own lines with physical ratios, so the stellar continuum
    must be line-free first. ±600 km/s (±13 Å at Hα) spans the eigenspectra's lines; the
    weak Balmer absorption of old populations inside the windows is lost with them.
    """
    lam = 10**es.loglam
    bad = np.zeros(lam.size, dtype=bool)
    for c in emission_lines().values():
        bad |= np.abs(lam - c) < c * half_width_kms / C_KMS
    good = ~bad
    basis = np.stack([np.interp(lam, lam[good], b[good]) for b in es.basis])
    return EigenSet(es.loglam, es.dlog, basis, None, es.scales, es.sigma_kms)


def eigen_draw(rng: np.random.Generator, es: EigenSet, amount: float = 1.0,
               lines: float = 1.0) -> np.ndarray:
    """A random positive combination: vector 0 plus Gaussian coefficients on the rest.

    The published sets carry no coefficient distribution, so the coefficient scales are
    heuristic (a few tens of percent of the mean); draws with negative flux are retried with
    smaller perturbations. ``lines`` scales everything above the continuum (line strength).
    """
    k = es.basis.shape[0]
    for attempt in range(6):
        c = np.ones(k)
        c[1:] = rng.normal(0.0, 1.0, k - 1) * np.array(es.scales[: k - 1]) * amount * 0.5**attempt
        f = c @ es.basis
        if es.cont is not None and lines != 1.0:
            cont = c @ es.cont
            f = cont + lines * (f - cont)
        core = f[len(f) // 10 : -len(f) // 10]
        if np.mean(core < 0) < 0.01:
            return np.maximum(f, 0.0)
    return np.maximum(es.basis[0].copy(), 0.0)


# ------------------------------------------------------------------------------ dust laws
def ccm_alav(lam: np.ndarray, rv: float = 3.1) -> np.ndarray:
    """Cardelli, Clayton & Mathis (1989) A_λ/A_V, IR + optical branches (0.3 ≤ x ≤ 3.3)."""
    x = np.clip(1e4 / lam, 0.3, 3.3)
    a = np.where(x < 1.1, 0.574 * x**1.61, 0.0)
    b = np.where(x < 1.1, -0.527 * x**1.61, 0.0)
    y = x - 1.82
    ao = (1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4
          + 0.01979 * y**5 - 0.77530 * y**6 + 0.32999 * y**7)
    bo = (1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4
          - 0.62251 * y**5 + 5.30260 * y**6 - 2.09002 * y**7)
    a = np.where(x >= 1.1, ao, a)
    b = np.where(x >= 1.1, bo, b)
    return a + b / rv


def calzetti_k(lam: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) k(λ) for star-forming galaxies (R_V = 4.05), clipped at 1200 Å."""
    mu = np.clip(lam, 1200.0, 22000.0) / 1e4
    blue = 2.659 * (-2.156 + 1.509 / mu - 0.198 / mu**2 + 0.011 / mu**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 / mu) + 4.05
    return np.where(mu < 0.63, blue, red)


def smc_k(lam: np.ndarray) -> np.ndarray:
    """SMC-like quasar reddening, A_λ/E(B−V) = 1.39 λ_μm^−1.2 (Hopkins et al. 2004)."""
    return 1.39 * (np.asarray(lam) / 1e4) ** -1.2


# ------------------------------------------------------------------------- building blocks
def broaden(flux: np.ndarray, dlog: float, sigma_kms: float) -> np.ndarray:
    """Gaussian convolution in log λ (velocity space), σ in km/s."""
    if sigma_kms <= 1.0:
        return flux
    sig_pix = sigma_kms / (C_KMS * LN10 * dlog)
    return gaussian_filter1d(flux, sig_pix, mode="nearest", truncate=4.0)


def add_gaussian_lines(loglam: np.ndarray, flux: np.ndarray, centres: np.ndarray,
                       fluxes: np.ndarray, sigma_kms: float) -> np.ndarray:
    """Add Gaussian emission lines of given integrated fluxes (flux·Å) at rest centres (Å)."""
    lam = 10**loglam
    dlog = loglam[1] - loglam[0]
    sig_log = sigma_kms / (C_KMS * LN10)
    out = flux.copy()
    for c, f in zip(centres, fluxes):
        if f <= 0:
            continue
        lc = math.log10(c)
        i0 = np.searchsorted(loglam, lc - 5 * sig_log - dlog)
        i1 = np.searchsorted(loglam, lc + 5 * sig_log + dlog)
        if i1 <= i0:
            continue
        u = (loglam[i0:i1] - lc) / sig_log
        sig_a = c * sig_log * LN10
        out[i0:i1] += f * np.exp(-0.5 * u * u) / (math.sqrt(2 * math.pi) * sig_a)
    del lam
    return out


def rebin(loglam_t: np.ndarray, flux_t: np.ndarray, lam_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flux-conserving rebin of a log-sampled model onto pixel edges; returns (flux, covered)."""
    dlog = loglam_t[1] - loglam_t[0]
    et = 10 ** np.concatenate([loglam_t - dlog / 2, loglam_t[-1:] + dlog / 2])
    cum = np.concatenate([[0.0], np.cumsum(flux_t * np.diff(et))])
    c = np.interp(lam_edges, et, cum)
    out = np.diff(c) / np.diff(lam_edges)
    covered = (lam_edges[:-1] >= et[0]) & (lam_edges[1:] <= et[-1])
    return out, covered


def smooth_noise(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    """Unit-variance Gaussian field with correlation length ``corr`` pixels."""
    g = rng.normal(size=n)
    if corr > 0.5:
        g = gaussian_filter1d(g, corr, mode="wrap")
        g /= max(float(g.std()), 1e-9)
    return g


def tau_eff_lya(z_abs: np.ndarray) -> np.ndarray:
    """Mean Lyα forest effective optical depth, Faucher-Giguère et al. (2008)."""
    return 0.0018 * np.clip(1.0 + z_abs, 1.0, None) ** 3.92


# ------------------------------------------------------------------------- source models
@dataclass
class Source:
    loglam: np.ndarray  # rest frame
    flux: np.ndarray
    sigma_kms: float  # intrinsic resolution already present
    extra_sigma_kms: float  # astrophysical broadening still to apply (dispersion, rotation)


class Sampler:
    """Uniform / log-uniform draws that collapse to the range's centre when ``fixed``.

    Why: every "random strength" in a population model is switchable (``Effects``); with the
    switch off the population keeps its typical values (the centre of each range) instead of
    losing its lines altogether.
    """

    def __init__(self, rng: np.random.Generator, fixed: bool = False):
        self.rng, self.fixed = rng, fixed

    def uniform(self, lo: float, hi: float) -> float:
        return 0.5 * (lo + hi) if self.fixed else float(self.rng.uniform(lo, hi))

    def loguniform(self, lo: float, hi: float) -> float:
        if self.fixed:
            return math.sqrt(lo * hi)
        return math.exp(self.rng.uniform(math.log(lo), math.log(hi)))
