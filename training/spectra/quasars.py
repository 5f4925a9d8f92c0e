"""Quasar populations: continuum and lines, the Lyα forest, BAL troughs, DLAs and Lyman-limit systems.

Why these: the shipped model called a bright z ≈ 3.8 quasar STAR and a faint z ≈ 0.5 quasar
GALAXY at P = 1.00 (issue 17). High-z quasars lose their blue side to the forest and to
intervening Lyman-limit systems, and look like red stars; reddened, weak-line and
host-dominated quasars look like galaxies. Each of those is drawn here, and recorded as the
spectrum's ``population`` so that evaluation can report on it.

Intervening H I absorbers are Voigt profiles in optical depth,
τ(ν) = N · (π e²/m_e c) · f · V(ν − ν₀; σ_D, Γ/4π) with f = 0.4164, Γ = 6.265e8 s⁻¹ for Lyα,
and a Lyman-limit continuum τ = N · 6.30e-18 cm² · (λ/911.75 Å)³ blueward of 911.75 Å
(Osterbrock & Ferland 2006). DLAs have log N_HI 20.3–22 with f(N) ∝ N⁻² (Prochaska & Wolfe
2009); Lyman-limit systems log N_HI 17.2–19 at a rate ℓ(z) = 1.9 ((1+z)/4.7)^1.94 per unit z
(Prochaska, O'Meara & Worseck 2010).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import voigt_profile

from .astro import C_KMS, Source, Templates, eigen_draw, smc_k, smooth_noise, tau_eff_lya
from .config import Effects, SimConfig

QSO_POPULATIONS = ["qso", "qso-high-z", "qso-bal", "qso-dla", "qso-weak-line", "qso-reddened",
                   "qso-host"]
# Priority when a quasar is several things at once: the rarest, most confusing trait names it.
QSO_FLAG_PRIORITY = [("bal", "qso-bal"), ("dla", "qso-dla"), ("weak_line", "qso-weak-line"),
                     ("reddened", "qso-reddened")]
HIGH_Z = 3.5  # above it the forest has eaten most of the band blueward of Lyα
LYA, LL = 1215.67, 911.75
PI_E2_MC = 0.026540  # π e² / (m_e c), cm² Hz
SIGMA_LL = 6.30e-18  # H I photo-ionisation cross-section at the Lyman limit, cm²
# Low-ionisation metal lines of DLAs (vacuum Å; Prochaska et al. 2001 list the usual ones).
DLA_METALS = [1260.42, 1302.17, 1334.53, 1526.71, 1548.20, 1550.78, 1608.45, 1670.79,
              2344.21, 2382.76, 2600.17, 2796.35, 2803.53]
DLA_Z_MIN = 3600.0 / LYA - 1  # the trough must fall on the bluest survey's band (BOSS/DESI)


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


# ------------------------------------------------------------------------------ absorbers
def lya_tau(lam_abs: np.ndarray, log_n: float, b_kms: float) -> np.ndarray:
    """Lyα optical depth of a column log N (cm⁻²) at absorber-frame wavelengths (Voigt)."""
    nu0 = C_KMS * 1e13 / LYA  # Hz (c in Å/s)
    nu = C_KMS * 1e13 / lam_abs
    sigma_nu = nu0 * b_kms / (C_KMS * math.sqrt(2.0))
    gamma = 6.265e8 / (4 * math.pi)
    return 10**log_n * PI_E2_MC * 0.4164 * voigt_profile(nu - nu0, sigma_nu, gamma)


def lyman_limit_tau(lam_abs: np.ndarray, log_n: float) -> np.ndarray:
    """Photo-ionisation optical depth blueward of 911.75 Å, ∝ λ³ (hydrogenic)."""
    return np.where(lam_abs < LL, 10**log_n * SIGMA_LL * (lam_abs / LL) ** 3, 0.0)


def absorber_transmission(lam_rest: np.ndarray, z_qso: float, z_abs: float, log_n: float,
                          b_kms: float) -> np.ndarray:
    """exp(−τ) of one H I absorber at z_abs, on the quasar's rest-frame grid."""
    lam_abs = lam_rest * (1 + z_qso) / (1 + z_abs)
    return np.exp(-(lya_tau(lam_abs, log_n, b_kms) + lyman_limit_tau(lam_abs, log_n)))


def metal_transmission(rng: np.random.Generator, lam_rest: np.ndarray, z_qso: float,
                       z_abs: float) -> np.ndarray:
    """Narrow low-ionisation metal absorption of a DLA (blended components, σ 20–60 km/s)."""
    lam_abs = lam_rest * (1 + z_qso) / (1 + z_abs)
    tau = np.zeros_like(lam_rest)
    sig = rng.uniform(20.0, 60.0) / C_KMS
    for lc in DLA_METALS:
        tau += rng.uniform(0.3, 2.5) * np.exp(-0.5 * ((lam_abs / lc - 1) / sig) ** 2)
    return np.exp(-tau)


def draw_dla(rng: np.random.Generator, z_qso: float) -> tuple[float, float] | None:
    """(z_abs, log N_HI) of a DLA in front of the quasar and redward of its Lyβ, or None.

    log N from f(N) ∝ N⁻² above 10^20.3 (inverse-CDF in N), capped at 10²²; z_abs uniform in
    the part of the forest where the trough is on the band and not proximate (> 5000 km/s).
    """
    lo = max(DLA_Z_MIN, (1 + z_qso) * 1025.72 / LYA - 1)
    hi = (1 + z_qso) * (1 - 5000.0 / C_KMS) - 1
    if hi <= lo:
        return None
    n_min = 10**20.3
    log_n = min(math.log10(n_min / (1 - rng.random() * (1 - n_min / 1e22))), 22.0)
    return float(rng.uniform(lo, hi)), log_n


def lls_redshifts(rng: np.random.Generator, z_qso: float, rate: float) -> np.ndarray:
    """Intervening Lyman-limit systems: Poisson in z with ℓ(z) = 1.9((1+z)/4.7)^1.94 (PON10)."""
    z_lo, z_hi = 2.0, z_qso - 0.02
    if z_hi <= z_lo:
        return np.zeros(0)
    mean = rate * 1.9 * 4.7 / 2.94 * (((1 + z_hi) / 4.7) ** 2.94 - ((1 + z_lo) / 4.7) ** 2.94)
    n = rng.poisson(mean)
    u = rng.random(n)  # inverse CDF of ℓ(z) ∝ (1+z)^1.94
    a, b = (1 + z_lo) ** 2.94, (1 + z_hi) ** 2.94
    return (a + u * (b - a)) ** (1 / 2.94) - 1


def chance(rng: np.random.Generator, p: float, force: str | None, name: str) -> bool:
    """A trait with probability p — or exactly when the population ``force`` is it.

    A forced population is pure: its own trait is certain and the others are absent.
    """
    return force == name if force else bool(rng.random() < p)


def intervening(rng: np.random.Generator, lam_rest: np.ndarray, z: float, cfg: SimConfig,
                flags: dict, force: str | None) -> np.ndarray:
    """Transmission of the DLA (if drawn) and the Lyman-limit systems along the sightline."""
    T = np.ones_like(lam_rest)
    if chance(rng, cfg.dla_fraction, force, "qso-dla"):
        dla = draw_dla(rng, z)
        if dla is not None:
            z_abs, log_n = dla
            T *= absorber_transmission(lam_rest, z, z_abs, log_n, rng.uniform(15.0, 40.0))
            T *= metal_transmission(rng, lam_rest, z, z_abs)
            flags.update(dla=1, dla_z=z_abs, dla_logn=log_n)
    for z_abs in lls_redshifts(rng, z, cfg.lls_rate):
        T *= absorber_transmission(lam_rest, z, float(z_abs), rng.uniform(17.2, 19.0),
                                   rng.uniform(15.0, 40.0))
    return T


# -------------------------------------------------------------------------------- quasar
def pick_eigenset(rng: np.random.Generator, tpl: Templates, z: float):
    """SDSS spEigenQSO or Redrock LOZ/HIZ; (set, whether its blue side holds the mean forest)."""
    if z >= 1.45 and rng.random() < 0.5:
        return tpl.qso_hiz, False
    if z < 1.55 and rng.random() < 0.5:
        return tpl.qso_loz, True
    return tpl.qso_sdss, True


def line_scale(rng: np.random.Generator, cfg: SimConfig, eff: Effects, force: str | None) -> tuple[float, bool]:
    """Emission-line strength: weak-line quasars ×0.05–0.3, others ×lognormal(0, 0.3)."""
    p = cfg.weak_line_fraction if eff.weak_line else 0.0
    if chance(rng, p, force, "qso-weak-line"):
        return float(rng.uniform(0.05, 0.3)), True
    return (float(rng.lognormal(0.0, 0.3)) if eff.line_strength else 1.0), False


def reddening(rng: np.random.Generator, lam: np.ndarray, cfg: SimConfig, force: str | None) -> tuple[np.ndarray, bool]:
    """SMC-like dust: reddened quasars E(B−V) 0.1–0.5, else mild for 30% (Hopkins et al. 2004)."""
    if chance(rng, cfg.qso_reddened_fraction, force, "qso-reddened"):
        return 10 ** (-0.4 * rng.uniform(0.1, 0.5) * smc_k(lam)), True
    if rng.random() < 0.3:
        return 10 ** (-0.4 * rng.exponential(0.06) * smc_k(lam)), False
    return np.ones_like(lam), False


def host_light(rng: np.random.Generator, tpl: Templates, f: np.ndarray, loglam: np.ndarray,
               z: float, force: str | None) -> tuple[np.ndarray, float]:
    """Host-galaxy light (SDSS galaxy eigenspectra) at z < 0.9: h × the quasar at 5000–5200 Å.

    A forced "qso-host" gets h = 0.3–1.5 (host-dominated at low luminosity); other forced
    populations stay below the 0.3 that names a host-dominated quasar.
    """
    lam = 10**loglam
    ref = (lam > 5000) & (lam < 5200)
    if not ref.any() or z >= 0.9:
        return f, 0.0
    h = rng.uniform(0.0, 1.2) * (1 - z / 0.9)
    if force:
        h = rng.uniform(0.3, 1.5) if force == "qso-host" else min(h, 0.25)
    g = np.interp(loglam, tpl.gal.loglam, eigen_draw(rng, tpl.gal), left=0.0, right=0.0)
    return f + h * g * np.median(f[ref]) / max(float(np.median(g[ref])), 1e-9), h


def qso_population(flags: dict, z: float) -> str:
    for flag, name in QSO_FLAG_PRIORITY:
        if flags.get(flag):
            return name
    if z >= HIGH_Z:
        return "qso-high-z"
    return "qso-host" if flags.get("host", 0.0) >= 0.3 else "qso"


def qso_source(rng: np.random.Generator, tpl: Templates, z: float, cfg: SimConfig,
               eff: Effects, flags: dict, force: str | None = None) -> Source:
    """One quasar; ``flags`` receives bal/weak_line/dla/reddened/host and the population.

    ``force`` (a QSO population name) makes that trait certain, for evaluation sets and tests.
    """
    es, absorbed = pick_eigenset(rng, tpl, z)
    lines, weak = line_scale(rng, cfg, eff, force)
    f = eigen_draw(rng, es, lines=lines)
    lam = 10**es.loglam
    if eff.qso_slopes:
        f = f * (lam / 3000.0) ** rng.normal(0.0, 0.4)
    reddened = False
    if eff.dust:
        red, reddened = reddening(rng, lam, cfg, force)
        f = f * red
    h = 0.0
    if eff.host_galaxy:
        f, h = host_light(rng, tpl, f, es.loglam, z, force)
    flags.update(weak_line=int(weak), reddened=int(reddened), host=h)
    if chance(rng, cfg.bal_fraction if eff.bal else 0.0, force, "qso-bal"):
        f = f * bal_transmission(rng, lam)
        flags["bal"] = 1
    if eff.lya_forest:
        f = f * lya_transmission(rng, lam, z, absorbed)
    if eff.absorbers or force == "qso-dla":
        f = f * intervening(rng, lam, z, cfg, flags, force)
    flags["population"] = qso_population(flags, z)
    return Source(es.loglam, f, es.sigma_kms, 0.0)
