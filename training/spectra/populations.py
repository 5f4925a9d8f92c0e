"""Every simulated population in one list, stars, and the evaluation subsets built on them.

Why a list of names: each simulated spectrum records the population it was drawn from as an
integer into ``POPULATIONS`` (the dataset's ``population`` column), so that evaluation can
report accuracy per population — starbursts, Seyfert 2s, E+A, high-z/BAL/DLA quasars... —
which is what issue 17's real-spectrum failures were about. "faint" and "nearby" are not
populations of sources but of observations; ``population_masks`` derives them from S/N and z.
"""

from __future__ import annotations

import numpy as np

from .astro import Source, Templates, eigen_draw
from .config import Effects, SimConfig
from .galaxies import GALAXY_POPULATIONS
from .quasars import QSO_POPULATIONS

STAR_POPULATIONS = ["star"]
POPULATIONS = GALAXY_POPULATIONS + QSO_POPULATIONS + STAR_POPULATIONS
TOP_OF_POPULATION = {**{p: "GALAXY" for p in GALAXY_POPULATIONS},
                     **{p: "QSO" for p in QSO_POPULATIONS}, "star": "STAR"}
FAINT_SNR = 3.0  # issue 17's faint galaxy had S/N ≈ 1.4
NEARBY_Z = 0.02  # issue 17's nearby galaxy had z ≈ 0.009


def star_source(rng: np.random.Generator, tpl: Templates, sub: str, cfg: SimConfig,
                eff: Effects) -> Source:
    """A star of subtype ``sub``: a Redrock archetype (measured ARCHETYPE_COEFF × basis) for
    ``redrock_star_fraction`` of the types Redrock has, else an SDSS spEigenStar template."""
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


def population_masks(data: dict[str, np.ndarray], top_of_label: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean selections of a dataset: one per population, plus faint and nearby galaxies."""
    out = {name: data["population"] == i for i, name in enumerate(POPULATIONS)}
    out["faint (S/N < 3)"] = data["snr"] < FAINT_SNR
    is_galaxy = top_of_label[data["label"]] == 0
    out["nearby galaxy (z < 0.02)"] = is_galaxy & (data["z"] < NEARBY_Z)
    return out
