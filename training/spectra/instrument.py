"""What a survey spectrograph does to light: resolution, sampling, sky, throughput, artefacts.

Why a module of its own: the populations (galaxies, quasars, stars) say what arrives at the
telescope; this says what a fibre spectrograph and its pipeline make of it, in order:

  velocity dispersion + instrumental resolution (one Gaussian in log λ, R linear in λ)
  → redshift → the survey's native pixel grid (flux-conserving) → Galactic dust (CCM),
  telluric bands, spectrophotometric distortion (tilt + curvature, bad blue ends), the
  dichroic crossover between spectrograph arms (flux mismatch + extra noise) → noise from object
  + sky through the throughput, at the drawn S/N → sky-subtraction residuals at the bright
  sky lines of skylines.dat → cosmic rays → masked pixels and bad columns.

Every step is a switch in ``config.Effects``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from service.spectra.preprocess import LogLambdaGrid, pixel_edges

from .astro import C_KMS, LN10, Source, broaden, ccm_alav, rebin, sky_lines
from .config import Effects


# ----------------------------------------------------------------------------------- surveys
@dataclass(frozen=True)
class Survey:
    """A spectrograph's native sampling and resolution (R linear in λ between the ends).

    ``crossovers``: where the dichroic hands the light from one arm to the next (Å), both
    arms then see part of it at lower throughput and the pipeline splices them.
    """

    name: str
    sampling: str  # "log" (Δlog10 λ) or "linear" (Δλ Å)
    lam_min: float
    lam_max: float
    step: float
    r_blue: float
    r_red: float
    crossovers: tuple[tuple[float, float], ...] = ()

    @property
    def wavelength(self) -> np.ndarray:
        return _survey_wavelength(self)


@cache
def _survey_wavelength(s: Survey) -> np.ndarray:
    if s.sampling == "log":
        g = LogLambdaGrid.from_range(s.lam_min, s.lam_max, s.step)
        return g.wavelength.copy()
    return np.arange(s.lam_min, s.lam_max + 0.5 * s.step, s.step)


SURVEYS: dict[str, Survey] = {
    # SDSS-I/II spectrograph: 3800–9200 Å, Δlog10λ = 1e-4, R ≈ 1850–2200; blue and red cameras
    # split by a dichroic at ≈ 6000 Å (York et al. 2000).
    "sdss": Survey("sdss", "log", 3800.0, 9200.0, 1e-4, 1850.0, 2200.0, ((5850.0, 6150.0),)),
    # BOSS: 3600–10400 Å, same log sampling, R ≈ 1560–2650; dichroic at ≈ 6000 Å (Smee et al. 2013).
    "boss": Survey("boss", "log", 3600.0, 10400.0, 1e-4, 1560.0, 2650.0, ((5850.0, 6150.0),)),
    # DESI: linear 0.8 Å from 3600 to 9824 Å, R ≈ 2000 (blue) – 5500 (red); b/r and r/z arm
    # overlaps 5660–5930 and 7470–7720 Å (DESI Collaboration 2022, instrument overview).
    "desi": Survey("desi", "linear", 3600.0, 9824.0, 0.8, 2000.0, 5500.0,
                   ((5660.0, 5930.0), (7470.0, 7720.0))),
    # 4MOST low-resolution spectrograph: 3700–9500 Å, R ≈ 4000–7500, ~3 px per element
    # (0.3 Å is our approximation of its sampling); three arms overlapping near 5400 and 7100 Å.
    "4most-lrs": Survey("4most-lrs", "linear", 3700.0, 9500.0, 0.3, 4000.0, 7500.0,
                        ((5350.0, 5540.0), (7020.0, 7260.0))),
}
SURVEY_NAMES = list(SURVEYS)


@cache
def _survey_edges(name: str) -> np.ndarray:
    return pixel_edges(SURVEYS[name].wavelength)


@cache
def _survey_ccm(name: str) -> np.ndarray:
    return ccm_alav(SURVEYS[name].wavelength)


# ------------------------------------------------------------------------------- the sky
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


# ------------------------------------------------------------------------ optics to pixels
def instrumental(src: Source, z: float, lam: np.ndarray, sig_b: float, sig_r: float) -> np.ndarray:
    """Broaden to the instrument (blend of blue- and red-end σ across the band), redshifted λ grid."""
    dlog = float(src.loglam[1] - src.loglam[0])

    def total(s_instr: float) -> float:
        return math.sqrt(max(s_instr**2 + src.extra_sigma_kms**2 - src.sigma_kms**2, 0.0))

    fb = broaden(src.flux, dlog, total(sig_b))
    if abs(sig_b - sig_r) <= 5.0:
        return fb
    fr = broaden(src.flux, dlog, total(sig_r))
    lam_rest_obs = 10**src.loglam * (1 + z)
    wr = np.clip((lam_rest_obs - lam[0]) / (lam[-1] - lam[0]), 0.0, 1.0)
    return (1 - wr) * fb + wr * fr


def telluric(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    """Residual O₂ A/B and H₂O band absorption after the pipeline's telluric correction."""
    T = np.ones_like(lam)
    for lo, hi, d in TELLURIC:
        depth = d * rng.uniform(0.0, 1.5)
        box = 0.5 * (np.tanh((lam - lo) / 3.0) - np.tanh((lam - hi) / 3.0))
        T *= 1 - min(depth, 0.9) * box
    return T


def fluxcal(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    """Spectrophotometric error: Legendre tilt + curvature (σ 12/6/4% in ln f), bad blue ends.

    SDSS spectrophotometry is good to a few per cent for stars but fibre placement, seeing and
    atmospheric differential refraction tilt galaxy and quasar spectra by more; a tenth of
    spectra also lose their blue end (spectrophotometric failure).
    """
    x = 2 * (lam - lam[0]) / (lam[-1] - lam[0]) - 1
    P = np.polynomial.legendre.legval(x, np.concatenate([[0.0], rng.normal(0, [0.12, 0.06, 0.04])]))
    if rng.random() < 0.1:
        P = P - rng.uniform(0.2, 0.8) * np.exp(-(lam - lam[0]) / 300.0)
    return np.exp(P)


def dichroic(rng: np.random.Generator, lam: np.ndarray, survey: Survey) -> tuple[np.ndarray, np.ndarray]:
    """(flux factor, throughput factor) at the survey's dichroic crossovers.

    Inside a crossover each arm gets part of the light at lower efficiency and the pipeline
    splices two noisier halves: the combined throughput dips by 20–60%, and the two arms'
    flux calibrations disagree by a few per cent (a step plus a bump where they join).
    """
    flux = np.ones_like(lam)
    thr = np.ones_like(lam)
    for lo, hi in survey.crossovers:
        c, w = 0.5 * (lo + hi), 0.5 * (hi - lo)
        bump = np.exp(-0.5 * ((lam - c) / (0.5 * w)) ** 2)
        thr *= 1 - rng.uniform(0.2, 0.6) * bump
        flux *= (1 + rng.normal(0, 0.02) * np.tanh((lam - c) / (0.25 * w))) * (1 + rng.normal(0, 0.03) * bump)
    return flux, thr


# ------------------------------------------------------------------------------- noise
def sky_ratio_for(rng: np.random.Generator, snr: float) -> float:
    """Sky continuum / object continuum: faint targets are sky dominated, bright ones are not."""
    lo, hi = (1.0, 10.0) if snr < 3 else (0.3, 4.0) if snr < 10 else (0.05, 1.0)
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def noise_sigma(f: np.ndarray, sky: np.ndarray, sky_ratio: float, thr: np.ndarray, snr: float,
                lam: np.ndarray, edges: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Per-pixel σ: variance ∝ (object + sky)/throughput, scaled so that the median S/N is ``snr``.

    ``snr`` is per model-grid pixel (Δlog10λ = 1e-4); it is converted to this survey's pixels.
    """
    var0 = (np.clip(f, 0, None) + sky_ratio * sky) / thr + 0.05 * sky_ratio
    grid_w = lam * LN10 * 1e-4
    snr_native = snr * np.sqrt(np.diff(edges) / grid_w)
    s0 = np.median((np.clip(f, 0, None) / np.sqrt(var0) / snr_native)[good]) if good.any() else 1.0
    return np.sqrt(var0) * max(float(s0), 1e-6)


def sky_residual(rng: np.random.Generator, sky_line: np.ndarray, sky_ratio: float) -> np.ndarray:
    """Imperfect sky subtraction: amplitude error + a wavelength shift (derivative term)."""
    a = rng.normal(0, 0.02)
    shift = rng.normal(0, 0.05)
    return (a * sky_line + np.gradient(sky_line) * shift) * sky_ratio


def cosmic_rays(rng: np.random.Generator, noisy: np.ndarray, sigma: np.ndarray, mask: np.ndarray) -> None:
    """Spikes of 5–50σ, half of them flagged by the pipeline (in place)."""
    n_out = rng.poisson(0.005 * noisy.size)
    idx = rng.integers(0, noisy.size, n_out)
    noisy[idx] += sigma[idx] * rng.uniform(5, 50, n_out)
    mask[idx[rng.random(n_out) < 0.5]] = True


def bad_columns(rng: np.random.Generator, mask: np.ndarray) -> None:
    """Scattered masked pixels (up to 1%) and a few runs of bad columns (in place)."""
    n = mask.size
    mask |= rng.random(n) < rng.uniform(0.0, 0.01)
    for _ in range(rng.poisson(0.7)):
        w = int(rng.integers(3, max(4, n // 40)))
        s = int(rng.integers(0, n - w))
        mask[s:s + w] = True


# ------------------------------------------------------------------------------ observe
def observe(rng: np.random.Generator, src: Source, z: float, survey: Survey, snr: float,
            eff: Effects, top: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source in its rest frame → (wavelength, flux, ivar, mask) on the survey's native grid."""
    lam = survey.wavelength
    edges = _survey_edges(survey.name)
    r_blue, r_red = (survey.r_blue, survey.r_red) if eff.resolution else (1e6, 1e6)
    sig_b = C_KMS / (2.3548 * r_blue)
    sig_r = C_KMS / (2.3548 * r_red)
    f_src = instrumental(src, z, lam, sig_b, sig_r)
    flux, covered = rebin(src.loglam + math.log10(1 + z), f_src, edges)
    flux = flux / (1 + z)

    if eff.dust:
        ebv = rng.exponential(0.15 if top == "STAR" else 0.03)
        flux = flux * 10 ** (-0.4 * 3.1 * min(ebv, 1.0) * _survey_ccm(survey.name))
    if eff.telluric:
        flux = flux * telluric(rng, lam)
    if eff.fluxcal:
        flux = flux * fluxcal(rng, lam)
    thr = throughput(lam)
    if eff.dichroic:
        dflux, dthr = dichroic(rng, lam, survey)
        flux, thr = flux * dflux, thr * dthr

    good = covered & (flux > 0)
    level = float(np.median(flux[good])) if good.any() else 1.0
    level = level if level > 0 else 1.0
    f = flux / level
    sky, sky_line = sky_spectrum(rng, lam, np.interp(lam, [lam[0], lam[-1]], [sig_b, sig_r]))
    sky_ratio = sky_ratio_for(rng, snr)
    sigma = noise_sigma(f, sky, sky_ratio, thr, snr, lam, edges, good)
    if eff.noise:
        noisy = f + sigma * rng.normal(size=f.size)
    else:
        noisy = f.copy()
        sigma = sigma * (snr / 1000.0)
    ivar = 1.0 / sigma**2 * rng.uniform(0.85, 1.15)  # pipeline error estimates are imperfect
    if eff.sky_residuals:
        noisy = noisy + sky_residual(rng, sky_line, sky_ratio)
    mask = ~covered
    if eff.outliers:
        cosmic_rays(rng, noisy, sigma, mask)
    if eff.masks:
        bad_columns(rng, mask)
    return lam, noisy * level, ivar / level**2, mask
