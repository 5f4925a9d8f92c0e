"""Survey-spectrum simulator built from the real pipeline templates in ``../shared``.

Why a simulator: there is no labelled archive to download here, and the templates are exactly
what the SDSS and DESI pipelines fit to real spectra. A classifier trained on clean templates
fails on real data, so each spectrum goes through what a real survey does to light, in order:

  rest-frame source (templates + lines, dust, QSO slope/host/weak lines/BAL, Lyα forest)
  → velocity dispersion + instrumental resolution (one Gaussian in log λ)
  → redshift → the survey's native pixel grid (flux-conserving) → Galactic dust,
  telluric bands, flux-calibration distortion → noise from flux + sky with the survey's
  throughput, sky-line residuals, outliers, masks
  → ``service.spectra.make_spectrum`` → ``service.spectra.preprocess`` (the service's code).

Every effect is switchable (``config.Effects``). Each spectrum has its own generator seeded by
``(seed, split, index)``, so a dataset is deterministic whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from scipy.ndimage import gaussian_filter1d, median_filter

from service.spectra import DEFAULT_GRID, PREPROCESS_VERSION, SpectrumError, make_spectrum, preprocess
from service.spectra.preprocess import LogLambdaGrid, pixel_edges

from .config import Effects, SimConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
C_KMS = 299792.458
LN10 = math.log(10.0)

# ------------------------------------------------------------------------------------ labels
# Flat 13-way softmax: the top-class probability is the sum of its labels (models/README.md).
# Flat rather than hierarchical because the contract wants one distribution over labels, and a
# flat softmax makes "P(STAR) = Σ P(STAR:*)" exact by construction with one head.
STAR_SUBTYPES = ["O", "B", "A", "F", "G", "K", "M", "L", "WD", "CV", "CARBON"]
LABELS: list[dict[str, Any]] = (
    [{"name": "GALAXY", "top": "GALAXY", "subtype": None},
     {"name": "QSO", "top": "QSO", "subtype": None}]
    + [{"name": f"STAR:{s}", "top": "STAR", "subtype": s} for s in STAR_SUBTYPES]
)
LABEL_NAMES = [lab["name"] for lab in LABELS]
TOP_CLASSES = ["GALAXY", "QSO", "STAR"]
TOP_OF_LABEL = np.array([TOP_CLASSES.index(lab["top"]) for lab in LABELS])


# ----------------------------------------------------------------------------------- surveys
@dataclass(frozen=True)
class Survey:
    """A spectrograph's native sampling and resolution (R linear in λ between the ends)."""

    name: str
    sampling: str  # "log" (Δlog10 λ) or "linear" (Δλ Å)
    lam_min: float
    lam_max: float
    step: float
    r_blue: float
    r_red: float

    @property
    def wavelength(self) -> np.ndarray:
        return _survey_wavelength(self)


@lru_cache(maxsize=None)
def _survey_wavelength(s: Survey) -> np.ndarray:
    if s.sampling == "log":
        g = LogLambdaGrid.from_range(s.lam_min, s.lam_max, s.step)
        return g.wavelength.copy()
    return np.arange(s.lam_min, s.lam_max + 0.5 * s.step, s.step)


SURVEYS: dict[str, Survey] = {
    # SDSS-I/II spectrograph: 3800–9200 Å, Δlog10λ = 1e-4, R ≈ 1850–2200.
    "sdss": Survey("sdss", "log", 3800.0, 9200.0, 1e-4, 1850.0, 2200.0),
    # BOSS: 3600–10400 Å, same log sampling, R ≈ 1560–2650.
    "boss": Survey("boss", "log", 3600.0, 10400.0, 1e-4, 1560.0, 2650.0),
    # DESI: linear 0.8 Å from 3600 to 9824 Å, R ≈ 2000 (blue) – 5500 (red).
    "desi": Survey("desi", "linear", 3600.0, 9824.0, 0.8, 2000.0, 5500.0),
    # 4MOST low-resolution spectrograph: 3700–9500 Å, R ≈ 4000–7500, ~3 px per element
    # (0.3 Å is our approximation of its sampling).
    "4most-lrs": Survey("4most-lrs", "linear", 3700.0, 9500.0, 0.3, 4000.0, 7500.0),
}
SURVEY_NAMES = list(SURVEYS)


# ------------------------------------------------------------------------------- line lists
def air_to_vacuum(lam_air: np.ndarray) -> np.ndarray:
    """Morton (1991) / IAU air→vacuum, applied to λ ≥ 2000 Å only (as the line lists are)."""
    lam = np.asarray(lam_air, dtype=np.float64)
    s2 = (1e4 / lam) ** 2
    n = 1.0 + 6.4328e-5 + 2.94981e-2 / (146.0 - s2) + 2.5540e-4 / (41.0 - s2)
    return np.where(lam >= 2000.0, lam * n, lam)


@lru_cache(maxsize=None)
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


@lru_cache(maxsize=None)
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
    return Templates(gal, qso_sdss, qso_loz, qso_hiz, cv, qso_z, sl, sflux, letters, names,
                     rr_loglam, rr_basis, rr_coeff)


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


def galaxy_source(rng: np.random.Generator, tpl: Templates, cfg: SimConfig, eff: Effects) -> Source:
    es = tpl.gal
    f = eigen_draw(rng, es)
    lam = 10**es.loglam
    sigma_v = rng.uniform(30.0, 320.0) if eff.velocity_dispersion else 0.0
    if eff.dust:
        ebv = rng.exponential(0.12)
        f = f * 10 ** (-0.4 * 0.44 * ebv * calzetti_k(lam))  # stars see 0.44× the gas E(B−V)
    f = broaden(f, es.dlog, sigma_v)
    # Emission lines as flux ratios to Hα, Hα from its rest equivalent width.
    lines = emission_lines()
    if eff.line_strength:
        star_forming = rng.random() < 0.6
        ew_ha = rng.lognormal(math.log(20.0), 0.9) if star_forming else rng.uniform(0.0, 3.0)
    else:
        ew_ha = 10.0
    ha = lines["H_alpha"]
    cont_ha = float(np.median(f[(lam > ha - 60) & (lam < ha + 60)]))
    F = ew_ha * cont_ha
    u = (lambda lo, hi: math.exp(rng.uniform(math.log(lo), math.log(hi)))) if eff.line_strength \
        else (lambda lo, hi: math.sqrt(lo * hi))
    hb = F / 2.86 * (u(0.5, 1.0) if eff.line_strength else 0.8)
    o3 = hb * u(0.15, 6.0)
    n2 = F * u(0.05, 1.2)
    o2 = hb * u(0.5, 4.0)
    s2 = F * u(0.1, 0.45)
    ratios = {
        "H_alpha": F, "H_beta": hb, "H_gamma": 0.47 * hb, "H_delta": 0.26 * hb,
        "H_epsilon": 0.16 * hb, "H_zeta": 0.1 * hb,
        "[O_III] 5007": o3, "[O_III] 4959": o3 / 3, "[N_II] 6583": n2, "[N_II] 6548": n2 / 3,
        "[O_II] 3725": 0.45 * o2, "[O_II] 3727": 0.55 * o2, "[S_II] 6716": 0.55 * s2,
        "[S_II] 6730": 0.45 * s2, "[Ne_III] 3868": o2 * u(0.03, 0.3), "He_I 5876": 0.03 * F,
        "[O_I] 6300": F * u(0.01, 0.2), "[Ar_III] 7135": 0.02 * F,
    }
    centres = np.array([lines[k] for k in ratios])
    sigma_gas = rng.uniform(25.0, 150.0) if eff.velocity_dispersion else 60.0
    f = add_gaussian_lines(es.loglam, f, centres, np.array(list(ratios.values())), sigma_gas)
    return Source(es.loglam, f, es.sigma_kms, 0.0)


def lya_transmission(rng: np.random.Generator, lam_rest: np.ndarray, z: float,
                     template_absorbed: bool) -> np.ndarray:
    """Lyα forest, Lyβ and Lyman-limit transmission with line-of-sight scatter.

    ``template_absorbed``: spEigenQSO was built from observed BOSS quasars (median z 2.76), so
    its blue side already holds the mean forest; there only the difference from that mean and
    the scatter are applied. Redrock's HIZ template had the forest corrected out.
    """
    T = np.ones_like(lam_rest)
    lya, lyb, ll = 1215.67, 1025.72, 911.75
    forest = lam_rest < lya
    if not forest.any():
        return T
    z_a = lam_rest[forest] * (1 + z) / lya - 1
    tau = tau_eff_lya(z_a)
    beta = lam_rest[forest] < lyb
    zb = lam_rest[forest] * (1 + z) / lyb - 1
    tau = tau + np.where(beta, 0.16 * tau_eff_lya(zb), 0.0)
    # Lognormal line-of-sight scatter (correlation ~ 2 px ≈ 140 km/s), renormalised so that the
    # realised mean transmission equals exp(−τ_eff) over the forest.
    g = smooth_noise(rng, int(forest.sum()), 2.0)
    s = 1.2
    L = np.exp(s * g - 0.5 * s * s)
    target = float(np.mean(np.exp(-tau)))
    lo, hi = 0.05, 20.0
    for _ in range(25):
        mid = math.sqrt(lo * hi)
        if float(np.mean(np.exp(-mid * tau * L))) > target:
            lo = mid
        else:
            hi = mid
    F = np.exp(-math.sqrt(lo * hi) * tau * L)
    if template_absorbed:
        z_ref = lam_rest[forest] * (1 + 2.76) / lya - 1
        F = F / np.exp(-tau_eff_lya(z_ref) - np.where(beta, 0.16 * tau_eff_lya(
            lam_rest[forest] * 3.76 / lyb - 1), 0.0))
        F = np.minimum(F, 1.6)
    lls = lam_rest[forest] < ll
    F = np.where(lls, F * math.exp(-rng.uniform(1.0, 6.0)), F)
    T[forest] = F
    return T


def bal_transmission(rng: np.random.Generator, lam_rest: np.ndarray) -> np.ndarray:
    """Broad absorption troughs blueward of high-ionisation (and sometimes low-ion) lines."""
    v_min = rng.uniform(0.0, 12000.0)
    width = rng.uniform(2000.0, 15000.0)
    depth = rng.uniform(0.3, 0.95)
    centres = [1549.06, 1396.76, 1240.81, 1215.67]
    if rng.random() < 0.2:  # LoBAL
        centres += [2799.49, 1857.4]
    T = np.ones_like(lam_rest)
    for lc in centres:
        v = (lc - lam_rest) / lc * C_KMS  # positive blueward (outflow)
        box = 0.5 * (np.tanh((v - v_min) / 600.0) - np.tanh((v - v_min - width) / 600.0))
        T *= 1 - depth * box * (0.6 + 0.4 * rng.random())
    return T


def qso_source(rng: np.random.Generator, tpl: Templates, z: float, cfg: SimConfig,
               eff: Effects, flags: dict[str, int]) -> Source:
    if z >= 1.45 and rng.random() < 0.5:
        es, absorbed = tpl.qso_hiz, False
    elif z < 1.55 and rng.random() < 0.5:
        es, absorbed = tpl.qso_loz, True
    else:
        es, absorbed = tpl.qso_sdss, True
    weak = eff.weak_line and rng.random() < cfg.weak_line_fraction
    if weak:
        lines = rng.uniform(0.05, 0.3)
    elif eff.line_strength:
        lines = rng.lognormal(0.0, 0.3)
    else:
        lines = 1.0
    flags["weak_line"] = int(weak)
    f = eigen_draw(rng, es, lines=lines)
    lam = 10**es.loglam
    if eff.qso_slopes:
        f = f * (lam / 3000.0) ** rng.normal(0.0, 0.4)
    if eff.dust and rng.random() < 0.3:
        f = f * 10 ** (-0.4 * rng.exponential(0.06) * smc_k(lam))
    if eff.host_galaxy and z < 0.8:
        g = eigen_draw(rng, tpl.gal)
        g = np.interp(es.loglam, tpl.gal.loglam, g, left=0.0, right=0.0)
        ref = (lam > 5000) & (lam < 5200)
        if ref.any():
            h = rng.uniform(0.0, 0.8) * (1 - z / 0.8)
            f = f + h * g * np.median(f[ref]) / max(float(np.median(g[ref])), 1e-9)
    if eff.bal and rng.random() < cfg.bal_fraction:
        f = f * bal_transmission(rng, lam)
        flags["bal"] = 1
    if eff.lya_forest:
        f = f * lya_transmission(rng, lam, z, absorbed)
    return Source(es.loglam, f, es.sigma_kms, 0.0)


def star_source(rng: np.random.Generator, tpl: Templates, sub: str, cfg: SimConfig,
                eff: Effects) -> Source:
    if sub == "CV":
        es = tpl.cv
        return Source(es.loglam, eigen_draw(rng, es), es.sigma_kms, 0.0)
    rot = rng.uniform(0.0, 80.0) if eff.velocity_dispersion else 0.0
    if sub in tpl.rr_basis and rng.random() < cfg.redrock_star_fraction:
        coeff = tpl.rr_coeff[sub]
        c = coeff[rng.integers(len(coeff))]
        f = np.maximum(c @ tpl.rr_basis[sub], 0.0)
        return Source(tpl.rr_loglam, f, 21.0, rot)
    idx = [i for i, s in enumerate(tpl.star_letter) if s == sub]
    i = idx[rng.integers(len(idx))]
    return Source(tpl.star_loglam, np.maximum(tpl.star_flux[i], 0.0), 65.0, rot)


# ------------------------------------------------------------------------ observation
@lru_cache(maxsize=None)
def _survey_edges(name: str) -> np.ndarray:
    return pixel_edges(SURVEYS[name].wavelength)


@lru_cache(maxsize=None)
def _survey_ccm(name: str) -> np.ndarray:
    return ccm_alav(SURVEYS[name].wavelength)


def sky_spectrum(rng: np.random.Generator, lam: np.ndarray, sigma_kms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(total sky, line part) in units of the sky continuum at 5500 Å."""
    cont = 0.6 + 0.4 * (lam / 5500.0) ** 2
    lines = np.zeros_like(lam)
    sl = sky_lines()
    sl = sl[(sl > lam[0] - 10) & (sl < lam[-1] + 10)]
    sig = np.interp(sl, lam, sigma_kms) / C_KMS * sl
    for c, s in zip(sl, sig):
        if abs(c - 5578.9) < 2:
            amp = rng.uniform(20, 60)
        elif c > 6800:
            amp = rng.lognormal(math.log(15.0), 0.6)
        else:
            amp = rng.lognormal(math.log(4.0), 0.6)
        i0, i1 = np.searchsorted(lam, [c - 5 * s - 2, c + 5 * s + 2])
        lines[i0:i1] += amp * np.exp(-0.5 * ((lam[i0:i1] - c) / s) ** 2)
    return cont + lines, lines


def throughput(lam: np.ndarray) -> np.ndarray:
    """Relative system throughput: falls steeply in the blue, gently in the far red."""
    return 0.08 + 0.92 * np.exp(-0.5 * ((lam - 6300.0) / np.where(lam < 6300, 1500.0, 3000.0)) ** 2)


TELLURIC = [  # vacuum Å: (lo, hi, typical residual depth)
    (6869.0, 6888.0, 0.3), (7596.0, 7700.0, 0.5), (7170.0, 7350.0, 0.12),
    (8130.0, 8360.0, 0.12), (8950.0, 9800.0, 0.15),
]


def observe(rng: np.random.Generator, src: Source, z: float, survey: Survey, snr: float,
            eff: Effects, top: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source in its rest frame → (wavelength, flux, ivar, mask) on the survey's native grid."""
    lam = survey.wavelength
    edges = _survey_edges(survey.name)
    r_blue, r_red = (survey.r_blue, survey.r_red)
    if not eff.resolution:
        r_blue = r_red = 1e6
    sig_b = C_KMS / (2.3548 * r_blue)
    sig_r = C_KMS / (2.3548 * r_red)
    dlog = float(src.loglam[1] - src.loglam[0])

    def total(s_instr: float) -> float:
        return math.sqrt(max(s_instr**2 + src.extra_sigma_kms**2 - src.sigma_kms**2, 0.0))

    fb = broaden(src.flux, dlog, total(sig_b))
    if abs(sig_b - sig_r) > 5.0:
        fr = broaden(src.flux, dlog, total(sig_r))
        lam_rest_obs = 10**src.loglam * (1 + z)
        wr = np.clip((lam_rest_obs - lam[0]) / (lam[-1] - lam[0]), 0.0, 1.0)
        f_src = (1 - wr) * fb + wr * fr
    else:
        f_src = fb
    loglam_obs = src.loglam + math.log10(1 + z)
    flux, covered = rebin(loglam_obs, f_src, edges)
    flux = flux / (1 + z)

    if eff.dust:
        ebv = rng.exponential(0.15 if top == "STAR" else 0.03)
        flux = flux * 10 ** (-0.4 * 3.1 * min(ebv, 1.0) * _survey_ccm(survey.name))
    if eff.telluric:
        T = np.ones_like(lam)
        for lo, hi, d in TELLURIC:
            depth = d * rng.uniform(0.0, 1.5)
            box = 0.5 * (np.tanh((lam - lo) / 3.0) - np.tanh((lam - hi) / 3.0))
            T *= 1 - min(depth, 0.9) * box
        flux = flux * T
    if eff.fluxcal:
        x = 2 * (lam - lam[0]) / (lam[-1] - lam[0]) - 1
        P = np.polynomial.legendre.legval(x, np.concatenate([[0.0], rng.normal(0, [0.12, 0.06, 0.04])]))
        if rng.random() < 0.1:  # occasional bad blue end (spectrophotometric failure)
            P = P - rng.uniform(0.2, 0.8) * np.exp(-(lam - lam[0]) / 300.0)
        flux = flux * np.exp(P)

    # Noise: variance from object photons + sky, divided by throughput; scaled to the S/N.
    good = covered & (flux > 0)
    level = float(np.median(flux[good])) if good.any() else 1.0
    level = level if level > 0 else 1.0
    f = flux / level
    sig_pix = np.interp(lam, [lam[0], lam[-1]], [sig_b, sig_r])
    sky, sky_line = sky_spectrum(rng, lam, sig_pix)
    # Sky continuum / object continuum: faint targets are sky dominated, bright ones are not.
    lo, hi = (1.0, 10.0) if snr < 3 else (0.3, 4.0) if snr < 10 else (0.05, 1.0)
    sky_ratio = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    var0 = (np.clip(f, 0, None) + sky_ratio * sky) / throughput(lam) + 0.05 * sky_ratio
    # snr is per model-grid pixel (Δlog10λ = 1e-4); convert to this survey's pixel width.
    grid_w = lam * LN10 * 1e-4
    pix_w = np.diff(edges)
    snr_native = snr * np.sqrt(pix_w / grid_w)
    s0 = np.median((np.clip(f, 0, None) / np.sqrt(var0) / snr_native)[good]) if good.any() else 1.0
    var = var0 * max(float(s0), 1e-6) ** 2
    sigma = np.sqrt(var)
    if eff.noise:
        noisy = f + sigma * rng.normal(size=f.size)
    else:
        noisy = f.copy()
        sigma = sigma * (snr / 1000.0)
    ivar = 1.0 / sigma**2 * rng.uniform(0.85, 1.15)  # pipeline error estimates are imperfect
    if eff.sky_residuals:
        # Imperfect subtraction: amplitude error + a wavelength shift (derivative term).
        a = rng.normal(0, 0.02)
        shift = rng.normal(0, 0.05)
        dsl = np.gradient(sky_line) * shift
        # The sky is in the same normalised flux units as f (var0 = f + sky_ratio·sky).
        noisy = noisy + (a * sky_line + dsl) * sky_ratio
    mask = ~covered
    if eff.outliers:
        n_out = rng.poisson(0.005 * lam.size)
        idx = rng.integers(0, lam.size, n_out)
        noisy[idx] += sigma[idx] * rng.uniform(5, 50, n_out)
        caught = rng.random(n_out) < 0.5  # half are flagged by the pipeline
        mask[idx[caught]] = True
    if eff.masks:
        mask |= rng.random(lam.size) < rng.uniform(0.0, 0.01)
        for _ in range(rng.poisson(0.7)):
            w = int(rng.integers(3, max(4, lam.size // 40)))
            s = int(rng.integers(0, lam.size - w))
            mask[s:s + w] = True
    return lam, noisy * level, ivar / level**2, mask


# --------------------------------------------------------------------------- one spectrum
def draw_snr(rng: np.random.Generator, cfg: SimConfig) -> float:
    if rng.random() < cfg.faint_fraction:
        lo, hi = cfg.snr_min, cfg.faint_snr_max
    else:
        lo, hi = cfg.snr_min, cfg.snr_max
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def draw_label(rng: np.random.Generator, cfg: SimConfig) -> int:
    tops = list(cfg.class_fractions)
    p = np.array([cfg.class_fractions[t] for t in tops], dtype=float)
    top = tops[rng.choice(len(tops), p=p / p.sum())]
    if top == "STAR":
        return LABEL_NAMES.index("STAR:" + STAR_SUBTYPES[rng.integers(len(STAR_SUBTYPES))])
    return LABEL_NAMES.index(top)


def draw_redshift(rng: np.random.Generator, label: int, tpl: Templates, cfg: SimConfig) -> float:
    top = LABELS[label]["top"]
    if not cfg.effects.redshift:
        return 0.0
    if top == "GALAXY":
        # Skewed to the SDSS/BOSS/DESI bright + LRG range but covering 0–z_max.
        return float(cfg.galaxy_z_max * rng.beta(1.3, 2.2))
    if top == "QSO":
        if rng.random() < cfg.qso_real_z_fraction:
            z0 = tpl.qso_z[rng.integers(len(tpl.qso_z))]
            z = (1 + z0) * math.exp(rng.normal(0, 0.05)) - 1
        else:
            z = rng.uniform(0.05, cfg.qso_z_max)
        return float(np.clip(z, 0.05, cfg.qso_z_max))
    return float(rng.normal(0.0, 120.0) / C_KMS)  # radial velocity


def simulate_one(seed: int, split: int, index: int, cfg: SimConfig,
                 survey_name: str | None = None, label: int | None = None,
                 snr: float | None = None, z: float | None = None):
    """(Spectrum, meta dict) for one simulated object; deterministic in (seed, split, index)."""
    rng = np.random.default_rng([seed, split, index])
    tpl = load_templates()
    eff = cfg.effects
    if survey_name is None:
        names = list(cfg.surveys)
        p = np.array([cfg.surveys[n] for n in names], dtype=float)
        survey_name = names[rng.choice(len(names), p=p / p.sum())]
    survey = SURVEYS[survey_name]
    label = draw_label(rng, cfg) if label is None else label
    z = draw_redshift(rng, label, tpl, cfg) if z is None else z
    snr = draw_snr(rng, cfg) if snr is None else snr
    top = LABELS[label]["top"]
    flags = {"bal": 0, "weak_line": 0}
    if top == "GALAXY":
        src = galaxy_source(rng, tpl, cfg, eff)
    elif top == "QSO":
        src = qso_source(rng, tpl, z, cfg, eff, flags)
    else:
        src = star_source(rng, tpl, LABELS[label]["subtype"], cfg, eff)
    lam, flux, ivar, mask = observe(rng, src, z, survey, snr, eff, top)
    meta = {"survey": survey_name, "label": label, "z": z, "snr": snr,
            "object_id": f"sim-{split}-{index}", **flags}
    spec = make_spectrum(lam, flux, ivar, mask, meta={"survey": survey_name,
                                                      "object_id": meta["object_id"]})
    return spec, meta


# ------------------------------------------------------------------------------ datasets
SPLITS = {"train": 0, "val": 1, "test": 2, "robust": 3, "baseline": 4}


def _chunk(args: tuple) -> dict[str, np.ndarray]:
    seed, split, start, stop, cfg_dict, grid_dict, fixed = args
    cfg = _sim_from_dict(cfg_dict)
    grid = LogLambdaGrid.from_manifest(grid_dict)
    n = stop - start
    X = np.zeros((n, 2, grid.npix), dtype=np.float16)
    out = {k: np.zeros(n, dtype=d) for k, d in
           (("label", np.int16), ("z", np.float32), ("snr", np.float32), ("survey", np.int8),
            ("bal", np.int8), ("weak_line", np.int8))}
    for j, i in enumerate(range(start, stop)):
        for attempt in range(5):
            try:
                spec, meta = simulate_one(seed, split, i + attempt * 10_000_000, cfg, **fixed)
                x = preprocess(spec, grid).x
                break
            except SpectrumError:
                continue
        X[j] = x
        out["label"][j] = meta["label"]
        out["z"][j] = meta["z"]
        out["snr"][j] = meta["snr"]
        out["survey"][j] = SURVEY_NAMES.index(meta["survey"])
        out["bal"][j] = meta["bal"]
        out["weak_line"][j] = meta["weak_line"]
    out["x"] = X
    return out


def _sim_from_dict(d: dict) -> SimConfig:
    d = dict(d)
    d["effects"] = Effects(**d["effects"])
    return SimConfig(**d)


def dataset_key(cfg: SimConfig, seed: int, split: str, n: int, grid: LogLambdaGrid,
                fixed: dict | None = None) -> str:
    blob = json.dumps({"sim": asdict(cfg), "seed": seed, "split": split, "n": n,
                       "grid": grid.to_manifest(), "pp": PREPROCESS_VERSION,
                       "fixed": fixed or {}, "code": _code_hash()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def _code_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def generate(cfg: SimConfig, n: int, seed: int, split: str, *, grid: LogLambdaGrid = DEFAULT_GRID,
             workers: int = 1, cache_dir: str | Path | None = REPO / "data", progress: bool = True,
             fixed: dict | None = None) -> dict[str, np.ndarray]:
    """Simulate + preprocess ``n`` spectra; cached as ``.npz`` keyed by everything that matters.

    ``fixed`` pins simulate_one arguments (survey_name, label, snr, z) for evaluation sets.
    """
    fixed = fixed or {}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"spectra-{split}-{n}-{dataset_key(cfg, seed, split, n, grid, fixed)}.npz"
        if path.exists():
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
    from tqdm import tqdm

    chunk = 200
    jobs = [(seed, SPLITS[split], s, min(s + chunk, n), asdict(cfg), grid.to_manifest(), fixed)
            for s in range(0, n, chunk)]
    parts = []
    bar = tqdm(total=n, desc=f"simulate {split}", unit="spec", disable=not progress,
               mininterval=2.0)
    if workers > 1 and len(jobs) > 1:
        load_templates()  # load once in the parent; forked workers inherit it
        ctx = mp.get_context("fork")
        with ctx.Pool(workers) as pool:
            for part in pool.imap(_chunk, jobs):
                parts.append(part)
                bar.update(len(part["label"]))
    else:
        for job in jobs:
            part = _chunk(job)
            parts.append(part)
            bar.update(len(part["label"]))
    bar.close()
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **data)
        os.replace(tmp, path)
    return data


def describe(cfg: SimConfig) -> str:
    """One paragraph for the manifest's training.data field."""
    on = [k for k, v in asdict(cfg.effects).items() if v]
    return (
        "Simulated survey spectra from real pipeline templates (SDSS spEigenGal/QSO/Star/CVstar, "
        "Redrock QSO LOZ/HIZ and STAR archetypes) with emission lines from SDSS emlines.par; "
        f"surveys {cfg.surveys}; class fractions {cfg.class_fractions}; median S/N per "
        f"Δlog10λ=1e-4 pixel {cfg.snr_min}–{cfg.snr_max} (log-uniform, {cfg.faint_fraction:.0%} "
        f"extra at {cfg.snr_min}–{cfg.faint_snr_max}); effects on: {', '.join(on)}; "
        f"preprocessed with service.spectra.preprocess v{PREPROCESS_VERSION}."
    )
