"""Galaxy populations across the BPT plane: passive, E+A, star-forming, starburst, Seyfert 2, LINER.

Why populations and not one heuristic galaxy: on 112 real SDSS spectra (issue 17) the shipped
model called 7 of 12 starbursts QSO or STAR — strong narrow lines on a blue continuum were
outside what a "lognormal around 20 Å" galaxy ever looked like. Each population here is a
continuum (old light from the line-free SDSS galaxy eigenspectra + young light from real hot
stars in spEigenStar: O/B for starbursts, A for E+A, the "E + A" of Dressler & Gunn 1983) plus
emission lines whose ratios sit where that population sits on the BPT diagram
(Baldwin, Phillips & Terlevich 1981):

  - star-forming / starburst: below the Kauffmann et al. (2003) line
    log([O III]/Hβ) = 0.61 / (log([N II]/Hα) − 0.05) + 1.3; starbursts at low metallicity
    (low [N II]/Hα, hence high [O III]/Hβ up to ~10), EW(Hα) 80–1000 Å;
  - Seyfert 2: above the Kewley et al. (2001) maximum-starburst line
    log([O III]/Hβ) = 0.61 / (log([N II]/Hα) − 0.47) + 1.19 and above the Schawinski et al.
    (2007) Seyfert/LINER division log([O III]/Hβ) = 1.05 log([N II]/Hα) + 0.45;
  - LINER: above Kewley 2001, below Schawinski 2007, [O II] 3727 > [O III] 5007 (Heckman 1980);
  - E+A: young A-star light with no emission (Hδ absorption EW > 5 Å; Goto 2003);
  - passive: old light, at most weak LINER-like lines (EW(Hα) < 1.5 Å).

Balmer lines follow Case B (Osterbrock & Ferland 2006, T = 10⁴ K: Hα/Hβ = 2.86, Hγ 0.468,
Hδ 0.259, Hε 0.159, Hζ 0.105; 3.1 for AGN narrow-line regions, Halpern & Steiner 1983),
then nebular dust (CCM, R_V = 3.1) raises the decrement; the stars see 0.44× the gas E(B−V)
(Calzetti 2000). Doublet ratios are atomic: [O III] 5007/4959 = 2.98, [N II] 6583/6548 = 3.05
(Storey & Zeippen 2000). The drawn EW(Hα) is the observed (reddened) rest-frame EW.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .astro import (
    Sampler,
    Source,
    Templates,
    add_gaussian_lines,
    broaden,
    calzetti_k,
    ccm_alav,
    eigen_draw,
    emission_lines,
)
from .config import Effects, SimConfig

GALAXY_POPULATIONS = ["passive", "e+a", "star-forming", "starburst", "seyfert2", "liner"]
SUPERGIANT = re.compile(r"(?<!I)I(a|b)")  # luminosity class Ia/Iab/Ib in spEigenStar NAMEi
CASE_B = {"H_alpha": 2.86, "H_beta": 1.0, "H_gamma": 0.468, "H_delta": 0.259,
          "H_epsilon": 0.159, "H_zeta": 0.105}


@dataclass(frozen=True)
class GalaxyKind:
    """The ranges one population is drawn from (the module docstring gives their sources)."""

    young: tuple[float, float]  # fraction of the light at 5500 Å from young stars
    young_types: str  # spEigenStar spectral letters the young light is drawn from
    ew_ha: tuple[float, float]  # observed rest EW(Hα) of the emission, Å (log-uniform; 0: none)
    sigma_gas: tuple[float, float]  # narrow-line σ, km/s (log-uniform)
    sigma_star: tuple[float, float]  # stellar velocity dispersion, km/s
    ebv_gas: float  # mean of the exponential nebular E(B−V)
    excitation: str  # "sf", "sf-lowz", "seyfert", "liner", "none"


KINDS: dict[str, GalaxyKind] = {
    "passive": GalaxyKind((0.0, 0.0), "", (0.1, 1.5), (100.0, 300.0), (120.0, 320.0), 0.05, "liner"),
    "e+a": GalaxyKind((0.4, 0.85), "A", (0.0, 0.0), (50.0, 150.0), (80.0, 250.0), 0.1, "none"),
    "star-forming": GalaxyKind((0.15, 0.6), "BA", (5.0, 100.0), (50.0, 150.0), (30.0, 150.0), 0.3, "sf"),
    "starburst": GalaxyKind((0.6, 0.95), "OB", (80.0, 1000.0), (50.0, 150.0), (30.0, 120.0), 0.15,
                            "sf-lowz"),
    "seyfert2": GalaxyKind((0.0, 0.3), "BA", (3.0, 80.0), (100.0, 300.0), (80.0, 250.0), 0.3, "seyfert"),
    "liner": GalaxyKind((0.0, 0.15), "A", (1.0, 8.0), (100.0, 300.0), (120.0, 320.0), 0.2, "liner"),
}


@dataclass
class GalaxyDraw:
    """A drawn galaxy: the source and what was drawn (for metadata and physics tests)."""

    source: Source
    population: str
    continuum: np.ndarray  # the line-free, dust-reddened, dispersion-broadened continuum
    line_flux: dict[str, float]  # observed (reddened) integrated fluxes, same units × Å
    ew_ha: float
    sigma_gas: float
    ebv_gas: float


# ----------------------------------------------------------------------------- BPT plane
def kauffmann03(x: float) -> float:
    """Upper envelope of star-forming galaxies (Kauffmann et al. 2003), x = log [N II]/Hα."""
    return 0.61 / (x - 0.05) + 1.3


def kewley01(x: float) -> float:
    """Maximum-starburst line (Kewley et al. 2001), x = log [N II]/Hα < 0.47."""
    return 0.61 / (x - 0.47) + 1.19


def schawinski07(x: float) -> float:
    """Seyfert (above) / LINER (below) division (Schawinski et al. 2007)."""
    return 1.05 * x + 0.45


def bpt_point(s: Sampler, excitation: str) -> tuple[float, float]:
    """(log [N II]6583/Hα, log [O III]5007/Hβ) inside the population's BPT region."""
    if excitation in ("sf", "sf-lowz"):
        x = s.uniform(-2.0, -0.8) if excitation == "sf-lowz" else s.uniform(-1.3, -0.35)
        return x, max(kauffmann03(x) - s.uniform(0.05, 0.7), -1.0)
    if excitation == "seyfert":
        x = s.uniform(-0.3, 0.4)
        lo = max(kewley01(x), schawinski07(x)) + 0.05
        return x, s.uniform(lo, max(lo + 0.15, 1.0))
    x = s.uniform(-0.1, 0.4)  # LINER
    return x, s.uniform(max(kewley01(x) + 0.05, -0.6), schawinski07(x) - 0.05)


def intrinsic_lines(s: Sampler, excitation: str) -> dict[str, float]:
    """Unreddened line fluxes relative to Hβ = 1 for one excitation class.

    [S II]/Hα, [O I]/Hα and [O II]/Hβ ranges follow the BPT populations of Kewley et al. (2006);
    [Ne III] 3869 / [O III] 5007 ≈ 0.06–0.12 (Pérez-Montero et al. 2007); He I 5876/Hβ ≈ 0.1
    (Izotov & Thuan); He II 4686/Hβ 0.1–0.3 only where an AGN hardens the spectrum.
    """
    agn = excitation in ("seyfert", "liner")
    x, y = bpt_point(s, excitation)
    ha = 3.1 if agn else CASE_B["H_alpha"]
    o3 = 10**y
    sii = {"sf": (-0.7, -0.3), "sf-lowz": (-0.9, -0.4), "seyfert": (-0.5, 0.0), "liner": (-0.4, 0.1)}
    oi = {"sf": (-2.0, -1.2), "sf-lowz": (-2.2, -1.4), "seyfert": (-1.3, -0.5), "liner": (-1.0, -0.3)}
    s2 = ha * 10 ** s.uniform(*sii[excitation])
    o2 = o3 * 10 ** s.uniform(0.0, 0.5) if excitation == "liner" else 10 ** s.uniform(0.0, 0.6)
    o1 = ha * 10 ** s.uniform(*oi[excitation])
    s2_ratio = s.uniform(1.0, 1.45)  # 6716/6731: low density to n_e ≈ 500 cm⁻³ (Osterbrock)
    lines = {k: v * (ha / 2.86 if k == "H_alpha" else 1.0) for k, v in CASE_B.items()}
    lines.update({
        "[N_II] 6583": ha * 10**x, "[N_II] 6548": ha * 10**x / 3.05,
        "[O_III] 5007": o3, "[O_III] 4959": o3 / 2.98, "[O_III] 4363": o3 * s.uniform(0.005, 0.02),
        "[O_II] 3725": 0.45 * o2, "[O_II] 3727": 0.55 * o2,
        "[Ne_III] 3868": o3 * s.uniform(0.06, 0.12), "[Ne_III] 3970": 0.31 * o3 * s.uniform(0.06, 0.12),
        "[S_II] 6716": s2 * s2_ratio / (1 + s2_ratio), "[S_II] 6730": s2 / (1 + s2_ratio),
        "[O_I] 6300": o1, "[O_I] 6363": o1 / 3.0, "He_I 5876": s.uniform(0.09, 0.13),
        "[Ar_III] 7135": ha * s.uniform(0.02, 0.05), "[S_III] 6312": ha * s.uniform(0.005, 0.02),
        "He_II 4685": s.uniform(0.1, 0.3) if excitation == "seyfert" else 0.0,
    })
    return lines


# ----------------------------------------------------------------------------- continuum
def young_light(rng: np.random.Generator, tpl: Templates, letters: str, loglam: np.ndarray) -> np.ndarray:
    """A real hot-star template (spEigenStar) on the galaxy grid, unit median at 5400–5600 Å.

    The stellar templates start at 3050 Å; bluer (needed above z ≈ 0.2 on BOSS) the star's own
    Balmer-continuum slope (3100–3500 Å, a power law in f_λ) is continued. Supergiants are
    left out: their Balmer lines are narrow, and a young population's light at 4000–5000 Å
    comes from main-sequence stars (which give E+A galaxies their deep Hδ).
    """
    idx = [i for i, (s, name) in enumerate(zip(tpl.star_letter, tpl.star_names))
           if s and s in letters and not SUPERGIANT.search(name)]
    star = tpl.star_flux[idx[rng.integers(len(idx))]]
    lam_s = 10**tpl.star_loglam
    lam = 10**loglam
    f = np.interp(lam, lam_s, np.maximum(star, 1e-6))
    uv = (lam_s > 3100) & (lam_s < 3500)
    slope = float(np.clip(np.polyfit(np.log(lam_s[uv]), np.log(np.maximum(star[uv], 1e-6)), 1)[0],
                          -4.0, 2.0))
    f0 = float(np.median(star[uv]))
    blue = lam < 3300
    f[blue] = f0 * (lam[blue] / 3300.0) ** slope
    return f / float(np.median(f[(lam > 5400) & (lam < 5600)]))


def old_light(rng: np.random.Generator, tpl: Templates) -> np.ndarray:
    """A line-free combination of the SDSS galaxy eigenspectra, unit median at 5400–5600 Å.

    The perturbations around the mean spectrum are kept to 0.6× the generic scales: young
    light is now added explicitly (``young_light``), and large eigen-coefficients would give
    "passive" galaxies the Balmer absorption of a post-starburst.
    """
    es = tpl.gal_cont
    f = eigen_draw(rng, es, amount=0.6)
    lam = 10**es.loglam
    return f / max(float(np.median(f[(lam > 5400) & (lam < 5600)])), 1e-9)


def continuum(rng: np.random.Generator, s: Sampler, tpl: Templates, kind: GalaxyKind,
              ebv_star: float, sigma_star: float) -> np.ndarray:
    """(1 − y)·old + y·young at 5500 Å, Calzetti-reddened, broadened by the stellar dispersion."""
    es = tpl.gal_cont
    f = old_light(rng, tpl)
    y = s.uniform(*kind.young) if kind.young_types else 0.0
    if y > 0:
        f = (1 - y) * f + y * young_light(rng, tpl, kind.young_types, es.loglam)
    f = f * 10 ** (-0.4 * ebv_star * calzetti_k(10**es.loglam))
    return broaden(f, es.dlog, sigma_star)


# ------------------------------------------------------------------------------- galaxy
def draw_population(rng: np.random.Generator, cfg: SimConfig) -> str:
    names = list(cfg.galaxy_populations)
    p = np.array([cfg.galaxy_populations[n] for n in names], dtype=float)
    return names[rng.choice(len(names), p=p / p.sum())]


def scaled_lines(s: Sampler, kind: GalaxyKind, cont: np.ndarray, loglam: np.ndarray,
                 ebv_gas: float) -> tuple[dict[str, float], float]:
    """Reddened line fluxes scaled so that the observed EW(Hα) is the drawn one."""
    if kind.ew_ha[1] <= 0:
        return {}, 0.0
    ew = s.loguniform(*kind.ew_ha)
    rel = intrinsic_lines(s, kind.excitation)
    lines = emission_lines()
    red = {k: v * 10 ** (-0.4 * 3.1 * ebv_gas * float(ccm_alav(np.array([lines[k]]))[0]))
           for k, v in rel.items()}
    lam = 10**loglam
    ha = lines["H_alpha"]
    cont_ha = float(np.median(cont[(lam > ha - 60) & (lam < ha + 60)]))
    scale = ew * cont_ha / red["H_alpha"]
    return {k: v * scale for k, v in red.items()}, ew


def galaxy_source(rng: np.random.Generator, tpl: Templates, cfg: SimConfig, eff: Effects,
                  population: str | None = None) -> GalaxyDraw:
    """One galaxy of ``population`` (drawn from ``cfg.galaxy_populations`` when None)."""
    population = population or draw_population(rng, cfg)
    kind = KINDS[population]
    s = Sampler(rng, fixed=not eff.line_strength)
    es = tpl.gal_cont
    ebv_gas = min(float(rng.exponential(kind.ebv_gas)), 1.0) if eff.dust else 0.0
    sigma_star = rng.uniform(*kind.sigma_star) if eff.velocity_dispersion else 0.0
    cont = continuum(rng, s, tpl, kind, 0.44 * ebv_gas, sigma_star)
    fluxes, ew = scaled_lines(s, kind, cont, es.loglam, ebv_gas)
    sigma_gas = s.loguniform(*kind.sigma_gas) if eff.velocity_dispersion else 60.0
    lines = emission_lines()
    names = [k for k, v in fluxes.items() if v > 0]
    f = add_gaussian_lines(es.loglam, cont, np.array([lines[k] for k in names]),
                           np.array([fluxes[k] for k in names]), sigma_gas)
    return GalaxyDraw(Source(es.loglam, f, es.sigma_kms, 0.0), population, cont, fluxes, ew,
                      sigma_gas, ebv_gas)


def nearby_redshift(rng: np.random.Generator, cfg: SimConfig) -> float:
    """Very nearby galaxies (issue 17: one at z ≈ 0.009 was called STAR), log-uniform in z."""
    return math.exp(rng.uniform(math.log(cfg.nearby_z_min), math.log(cfg.nearby_z_max)))
