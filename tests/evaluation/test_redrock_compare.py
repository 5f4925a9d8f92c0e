"""The Redrock comparison's own scoring, on inputs small enough to check by hand, and one
Redrock fit (skipped where redrock, an optional evaluation dependency, is not installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from evaluation.redrock_compare import (
    build_templates,
    model_grid_inputs,
    redrock_fit,
    score,
    star_letter,
    stratified,
    zstats,
)
from service.spectra import DEFAULT_GRID, preprocess
from training.spectra.config import Effects, SimConfig
from training.spectra.labels import LABEL_NAMES, TOP_CLASSES
from training.spectra.populations import POPULATIONS
from training.spectra.simulate import simulate_one

GAL, QSO, STAR_A = (LABEL_NAMES.index(n) for n in ("GALAXY", "QSO", "STAR:A"))


def test_zstats_counts_outliers_and_nmad():
    zt = np.array([0.0, 1.0, 1.0, 1.0])
    zp = np.array([0.0, 1.0, 1.0, 1.2])  # one |Δz|/(1+z) = 0.1
    s = zstats(zt, zp, 0.05)
    assert s["n"] == 4 and s["outliers"] == pytest.approx(0.25)
    assert s["sigma_nmad"] == pytest.approx(0.0)
    assert zstats(zt[:0], zp[:0], 0.05)["n"] == 0


def test_star_letter_reads_sdss_and_desi_subtypes():
    assert [star_letter(s) for s in ("A0IVN (25642)", "LDWARF", "CALCIUMWD", "CARBON",
                                     "SD:F0 G (8429)", "K", "CV", "WD", "???")] == \
        ["A", "L", "WD", "CARBON", "F", "K", "CV", "WD", ""]


def test_stratified_gives_each_class_a_third_and_every_population_a_turn():
    pops = {n: i for i, n in enumerate(POPULATIONS)}
    label = np.array([GAL] * 30 + [QSO] * 30 + [STAR_A] * 30)
    population = np.array([pops["passive"]] * 28 + [pops["starburst"]] * 2
                          + [pops["qso"]] * 30 + [pops["star"]] * 30)
    idx = stratified(label, population, 9, seed=0)
    assert len(idx) == len(set(idx)) == 9
    assert [int((label[idx] == k).sum()) for k in (GAL, QSO, STAR_A)] == [3, 3, 3]
    # the 2 starbursts among 28 passive galaxies are drawn as often as passive ones
    assert (population[idx] == pops["starburst"]).sum() >= 1


def test_score_per_class_population_and_snr():
    pops = {n: i for i, n in enumerate(POPULATIONS)}
    truth = {"label": np.array([GAL, GAL, QSO, STAR_A]),
             "z": np.array([0.1, 0.5, 2.0, 0.0]),
             "snr": np.array([2.0, 30.0, 8.0, 12.0]),
             "population": np.array([pops["passive"], pops["starburst"], pops["qso"],
                                     pops["star"]])}
    pred = {"top": np.array([0, 1, 1, 2]),  # the starburst called QSO
            "z": np.array([0.1, 1.9, 2.0, 0.0]),
            "letter": np.array(["", "", "", "F"])}
    s = score(pred, truth)
    assert s["accuracy_top"] == pytest.approx(0.75) and s["star_letter"] == 0.0
    assert s["confusion"][0][1] == 1
    g = s["class"]["GALAXY"]
    assert g["n"] == 2 and g["accuracy_top"] == 0.5 and g["GALAXY"]["outliers"] == 0.5
    assert s["class"]["QSO"]["QSO"]["outliers"] == 0.0
    assert s["population"]["starburst"]["accuracy_top"] == 0.0
    assert s["snr"]["S/N 1–3"]["n"] == 1 and s["snr"]["S/N ≥ 20"]["accuracy_top"] == 0.0
    assert set(s["class"]) == set(TOP_CLASSES)


def test_model_grid_inputs_invert_the_weight_channel():
    x = np.zeros((1, 2, 4), dtype=np.float32)
    x[0, 0] = [1.0, -2.0, 0.0, 3.0]
    x[0, 1] = [0.5, 0.0, 0.8, 1.0]
    f, iv = model_grid_inputs(x)
    assert np.allclose(f[0], x[0, 0])
    assert np.allclose(iv[0], [1.0, 0.0, 4.0, 999.0])  # w clipped at 0.999, as baseline.py


@pytest.mark.usefixtures("shared_data")
@pytest.mark.skipif(importlib.util.find_spec("redrock") is None,
                    reason="redrock not installed (optional evaluation tool: pip install redrock)")
def test_redrock_fits_a_bright_galaxy_and_quasar(tmp_path):
    folder = build_templates("desi", tmp_path)
    for star in folder.glob("rrtemplate-STAR-*.fits"):  # GALAXY vs QSO only: keeps it quick
        star.unlink()
    cfg = SimConfig(effects=Effects(noise=False, sky_residuals=False, outliers=False,
                                    masks=False, fluxcal=False, telluric=False, bal=False))
    xs = []
    for label, z in ((GAL, 0.3), (QSO, 2.2)):
        spec, _ = simulate_one(0, 9, 1, cfg, survey_name="boss", label=label, snr=30.0, z=z)
        xs.append(preprocess(spec, DEFAULT_GRID).x)
    f, iv = model_grid_inputs(np.stack(xs))
    with open(tmp_path / "redrock.log", "w") as log:
        r = redrock_fit([(DEFAULT_GRID.wavelength, f[i], iv[i]) for i in range(2)], folder,
                        1, False, log)
    assert [TOP_CLASSES[t] for t in r["top"]] == ["GALAXY", "QSO"]
    assert abs(r["z"][0] - 0.3) / 1.3 < 1e-3
    assert abs(r["z"][1] - 2.2) / 3.2 < 1e-2
