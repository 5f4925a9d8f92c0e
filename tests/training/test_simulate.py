"""The simulator: deterministic, every label on every survey, and the physics where it shows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service.spectra import DEFAULT_GRID, preprocess
from training.config import Effects, SimConfig
from training.simulate import (
    LABEL_NAMES,
    LABELS,
    SURVEYS,
    air_to_vacuum,
    emission_lines,
    generate,
    simulate_one,
    sky_lines,
)

pytestmark = pytest.mark.usefixtures("shared_data")


def clean(**overrides) -> SimConfig:
    """Noise-free, artefact-free spectra: the physics alone, so a test can look at lines."""
    eff = Effects(noise=False, sky_residuals=False, outliers=False, masks=False, fluxcal=False,
                  telluric=False, bal=False, weak_line=False, **overrides)
    return SimConfig(effects=eff, bal_fraction=0.0, weak_line_fraction=0.0)


def grid_flux(spec) -> np.ndarray:
    return preprocess(spec, DEFAULT_GRID).x[0]


def test_labels_follow_the_contract():
    assert len(LABELS) == 13
    assert LABEL_NAMES[:2] == ["GALAXY", "QSO"]
    assert {lab["top"] for lab in LABELS} == {"GALAXY", "QSO", "STAR"}
    assert all(lab["name"] == f"STAR:{lab['subtype']}" for lab in LABELS if lab["top"] == "STAR")


def test_same_seed_same_spectrum_other_index_other_spectrum():
    cfg = SimConfig()
    a, ma = simulate_one(0, 0, 11, cfg)
    b, mb = simulate_one(0, 0, 11, cfg)
    c, _ = simulate_one(0, 0, 12, cfg)
    assert ma == mb
    np.testing.assert_array_equal(a.flux, b.flux)
    np.testing.assert_array_equal(a.ivar, b.ivar)
    assert a.flux.shape != c.flux.shape or not np.array_equal(a.flux, c.flux)


def test_generate_is_deterministic_and_labelled(tmp_path):
    cfg = SimConfig()
    d1 = generate(cfg, 6, 3, "test", cache_dir=None, progress=False)
    d2 = generate(cfg, 6, 3, "test", cache_dir=tmp_path, progress=False)
    d3 = generate(cfg, 6, 3, "test", cache_dir=tmp_path, progress=False)  # from the cache
    for k in d1:
        np.testing.assert_array_equal(d1[k], d2[k])
        np.testing.assert_array_equal(d2[k], d3[k])
    assert d1["x"].shape == (6, 2, DEFAULT_GRID.npix)
    assert list(tmp_path.glob("*.npz"))


@pytest.mark.parametrize("survey", list(SURVEYS))
def test_every_label_gives_a_usable_spectrum_on_every_survey(survey):
    cfg = SimConfig()
    for label in range(len(LABELS)):
        spec, meta = simulate_one(0, 7, label, cfg, survey_name=survey, label=label, snr=10.0)
        p = preprocess(spec, DEFAULT_GRID)
        assert np.isfinite(p.x).all()
        assert p.coverage > 0.9 and p.masked_fraction < 0.4, (LABEL_NAMES[label], survey)
        assert np.median(p.x[0][p.x[1] > 0]) == pytest.approx(1.0, abs=0.05)
        w = spec.wavelength
        assert w[0] >= SURVEYS[survey].lam_min * 0.999 and w[-1] <= SURVEYS[survey].lam_max * 1.001


def test_qso_at_z2_has_lyman_alpha_emission_near_3648A():
    cfg = clean()
    spec, _ = simulate_one(0, 8, 1, cfg, survey_name="boss", label=LABEL_NAMES.index("QSO"),
                           snr=50.0, z=2.0)
    f = grid_flux(spec)
    lam = DEFAULT_GRID.wavelength
    blue = (lam > 3600) & (lam < 4200)
    peak = lam[blue][np.argmax(f[blue])]
    assert abs(peak - 1215.67 * 3) < 40
    # C IV 1549 at 4647 Å stands above the continuum on both sides
    civ = f[(lam > 4600) & (lam < 4700)].max()
    assert civ > 1.1 * np.median(f[(lam > 4900) & (lam < 5200)])


def test_lya_forest_absorbs_blueward_of_lya_at_high_z():
    on = clean()
    off = clean(lya_forest=False)
    q = LABEL_NAMES.index("QSO")
    lam = DEFAULT_GRID.wavelength
    forest = (lam > 1060 * 4.5) & (lam < 1180 * 4.5)
    ratios = []
    for i in range(5):
        a, _ = simulate_one(0, 8, 100 + i, on, survey_name="boss", label=q, snr=50.0, z=3.5)
        b, _ = simulate_one(0, 8, 100 + i, off, survey_name="boss", label=q, snr=50.0, z=3.5)
        red = (lam > 1300 * 4.5) & (lam < 1500 * 4.5)
        fa, fb = grid_flux(a), grid_flux(b)
        ratios.append((fa[forest].mean() / fa[red].mean()) / (fb[forest].mean() / fb[red].mean()))
    # Mean transmission at z_abs ≈ 3.2 is ≈ 0.6 relative to an unabsorbed continuum; the SDSS
    # template already holds some mean absorption, so only ask for clear extra absorption.
    assert np.mean(ratios) < 0.9


def test_galaxy_halpha_lands_at_its_redshifted_wavelength():
    cfg = clean(line_strength=False)  # fixed EW(Hα) = 10 Å
    spec, _ = simulate_one(0, 8, 2, cfg, survey_name="sdss", label=0, snr=50.0, z=0.1)
    f = grid_flux(spec)
    lam = DEFAULT_GRID.wavelength
    ha = emission_lines()["H_alpha"] * 1.1
    core = np.abs(lam - ha) < 4
    side = (np.abs(lam - ha) > 40) & (np.abs(lam - ha) < 80)
    assert f[core].max() > 1.3 * np.median(f[side])


def test_late_type_stars_are_redder_than_early_type_stars():
    cfg = clean(dust=False)
    lam = DEFAULT_GRID.wavelength
    colour = {}
    for sub in ("A", "M"):
        vals = []
        for i in range(4):
            spec, _ = simulate_one(0, 8, 200 + i, cfg, survey_name="boss",
                                   label=LABEL_NAMES.index(f"STAR:{sub}"), snr=50.0)
            f = grid_flux(spec)
            vals.append(f[(lam > 8000) & (lam < 9000)].mean() / f[(lam > 4000) & (lam < 5000)].mean())
        colour[sub] = np.median(vals)
    assert colour["M"] > 3 * colour["A"]


def test_noise_follows_the_requested_snr():
    cfg = dataclasses.replace(SimConfig(), effects=Effects(sky_residuals=False, outliers=False))
    spec, _ = simulate_one(0, 8, 3, cfg, survey_name="sdss", label=LABEL_NAMES.index("STAR:G"),
                           snr=2.0)
    good = ~spec.mask
    model_snr = np.median(np.abs(spec.flux[good]) * np.sqrt(spec.ivar[good]))
    assert 1.0 < model_snr < 4.0


def test_line_lists_are_vacuum():
    assert air_to_vacuum(np.array([6562.8]))[0] == pytest.approx(6564.6, abs=0.1)
    assert air_to_vacuum(np.array([1215.67]))[0] == 1215.67  # < 2000 Å lists are vacuum already
    assert np.any(np.abs(sky_lines() - 5578.9) < 0.5)
