"""The simulator: deterministic, every label on every survey, and the physics where it shows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service.spectra import DEFAULT_GRID, preprocess
from training.spectra import simulate
from training.spectra.astro import load_templates
from training.spectra.config import Effects, SimConfig
from training.spectra.galaxies import KINDS, galaxy_source, kauffmann03, kewley01, schawinski07
from training.spectra.instrument import SURVEYS
from training.spectra.labels import LABEL_NAMES, LABELS, TOP_OF_LABEL
from training.spectra.populations import POPULATIONS, TOP_OF_POPULATION, population_masks
from training.spectra.simulate import (
    air_to_vacuum,
    draw_redshift,
    emission_lines,
    generate,
    simulate_one,
    sky_lines,
)

pytestmark = pytest.mark.usefixtures("shared_data")


def clean(**overrides) -> SimConfig:
    """Noise-free, artefact-free spectra: the physics alone, so a test can look at lines."""
    off = {"noise": False, "sky_residuals": False, "outliers": False, "masks": False,
           "fluxcal": False, "telluric": False, "bal": False, "weak_line": False, "dichroic": False}
    eff = Effects(**{**off, **overrides})
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
    assert list(tmp_path.glob("spectra-test-*/*.npz"))


@pytest.mark.parametrize("survey", list(SURVEYS))
def test_every_label_gives_a_usable_spectrum_on_every_survey(survey):
    cfg = SimConfig()
    for label in range(len(LABELS)):
        spec, _meta = simulate_one(0, 7, label, cfg, survey_name=survey, label=label, snr=10.0)
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
    cfg = clean(line_strength=False)  # every range at its centre: EW(Hα) = 22 Å
    spec, _ = simulate_one(0, 8, 2, cfg, survey_name="sdss", label=0, snr=50.0, z=0.1,
                           population="star-forming")
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


# ------------------------------------------------------------------------------ populations
def rest_band(lam: np.ndarray, f: np.ndarray, lo: float, hi: float) -> float:
    return float(f[(lam > lo) & (lam < hi)].mean())


def lick_hdelta_a(lam: np.ndarray, f: np.ndarray) -> float:
    """Lick HδA index (Worthey & Ottaviani 1997), its air bandpasses shifted to vacuum (+1.1 Å)."""
    blue, red = rest_band(lam, f, 4042.7, 4080.9), rest_band(lam, f, 4129.6, 4162.1)
    sel = (lam > 4084.6) & (lam < 4123.4)
    x = lam[sel]
    cont = blue + (red - blue) * (x - 4061.8) / (4145.85 - 4061.8)
    return float(np.trapezoid(1 - f[sel] / cont, x))


def halpha_ew(lam: np.ndarray, f: np.ndarray, sigma_kms: float) -> float:
    """Rest EW of Hα emission: a linear continuum through side bands clear of [N II] and [S II]."""
    ha = emission_lines()["H_alpha"]
    side = ((lam > 6480) & (lam < 6530)) | ((lam > 6620) & (lam < 6680))
    cont = np.polyval(np.polyfit(lam[side], f[side], 1), lam)
    core = np.abs(lam - ha) < 3 * ha * sigma_kms / 299792.458
    return float(np.trapezoid((f[core] - cont[core]) / cont[core], lam[core]))


def line_fluxes(draw, names: list[str]) -> dict[str, float]:
    """Fluxes of (possibly blended) lines measured by a linear fit of Gaussians at their centres."""
    lines = emission_lines()
    lam = 10**draw.source.loglam
    resid = draw.source.flux - draw.continuum
    sig = np.array([lines[n] * draw.sigma_gas / 299792.458 for n in names])
    cen = np.array([lines[n] for n in names])
    near = np.min(np.abs(lam[:, None] - cen[None, :]) / sig[None, :], axis=1) < 5
    A = np.exp(-0.5 * ((lam[near, None] - cen) / sig) ** 2) / (np.sqrt(2 * np.pi) * sig)
    amp = np.linalg.lstsq(A, resid[near], rcond=None)[0]
    return dict(zip(names, amp))


def galaxies(population: str, n: int, dust: bool = True):
    tpl = load_templates()
    eff = Effects(dust=dust)
    return [galaxy_source(np.random.default_rng([17, i]), tpl, SimConfig(), eff, population)
            for i in range(n)]


def test_starburst_halpha_ew_is_in_the_drawn_range_and_measured_so():
    lo, hi = KINDS["starburst"].ew_ha
    for g in galaxies("starburst", 5):
        lam = 10**g.source.loglam
        assert lo <= g.ew_ha <= hi
        assert halpha_ew(lam, g.source.flux, g.sigma_gas) == pytest.approx(g.ew_ha, rel=0.15)


def test_starbursts_are_bluer_than_passive_galaxies():
    def colour(g):
        lam = 10**g.source.loglam
        return rest_band(lam, g.continuum, 4000, 4200) / rest_band(lam, g.continuum, 6000, 6200)

    blue = [colour(g) for g in galaxies("starburst", 4, dust=False)]
    red = [colour(g) for g in galaxies("passive", 4, dust=False)]
    assert min(blue) > 1.5 * max(red)


@pytest.mark.parametrize("population", ["star-forming", "starburst", "seyfert2", "liner"])
def test_bpt_ratios_measured_on_the_spectrum_sit_in_the_population_region(population):
    names = ["H_beta", "[O_III] 4959", "[O_III] 5007", "[N_II] 6548", "H_alpha", "[N_II] 6583"]
    for g in galaxies(population, 4):
        m = line_fluxes(g, names)
        x, y = np.log10(m["[N_II] 6583"] / m["H_alpha"]), np.log10(m["[O_III] 5007"] / m["H_beta"])
        assert -1.05 < y < 1.15  # [O III]/Hβ from ~0.1 to ~10
        assert m["H_alpha"] / m["H_beta"] > 2.8  # Case B 2.86, only raised by dust
        if population in ("star-forming", "starburst"):
            assert y < kauffmann03(x)
        elif population == "seyfert2":
            assert y > kewley01(x) and y > schawinski07(x)
        else:
            assert y > kewley01(x) and y < schawinski07(x)


def test_e_plus_a_has_deep_balmer_absorption_and_no_emission():
    ea = [lick_hdelta_a(10**g.source.loglam, g.source.flux) for g in galaxies("e+a", 6)]
    passive = [lick_hdelta_a(10**g.source.loglam, g.source.flux) for g in galaxies("passive", 6)]
    assert np.mean(ea) > 5.0 and min(ea) > 2.5  # E+A: EW(Hδ) > 5 Å (Goto 2003)
    assert max(passive) < 2.0
    assert all(not g.line_flux for g in galaxies("e+a", 3))


def test_nearby_galaxies_reach_z_0_001():
    cfg = dataclasses.replace(SimConfig(), nearby_fraction=1.0)
    tpl = load_templates()
    z = [draw_redshift(np.random.default_rng(i), 0, tpl, cfg) for i in range(200)]
    assert min(z) >= 0.001 and max(z) <= 0.03 and min(z) < 0.002
    spec, _ = simulate_one(0, 9, 0, clean(), survey_name="sdss", z=0.002, snr=30.0,
                              population="starburst")
    f, lam = grid_flux(spec), DEFAULT_GRID.wavelength
    ha = emission_lines()["H_alpha"] * 1.002
    assert lam[np.argmax(np.where(np.abs(lam - ha) < 30, f, 0))] == pytest.approx(ha, abs=3)


def test_dla_trough_and_lyman_limit_at_the_absorber_redshift():
    cfg = clean(lya_forest=False)
    spec, meta = simulate_one(0, 9, 1, cfg, survey_name="boss", snr=50.0, z=4.0, population="qso-dla")
    assert meta["dla"] == 1 and meta["population"] == "qso-dla"
    lam, f = spec.wavelength, spec.flux
    z_abs, log_n = meta["dla_z"], meta["dla_logn"]
    centre = 1215.67 * (1 + z_abs)
    cont = np.median(f[(lam > 1280 * 5) & (lam < 1400 * 5)])
    assert np.abs(f[np.abs(lam - centre) < 2]).max() < 0.05 * cont  # black core
    # Damping wing: τ < 0.1 beyond Δλ ≈ 2.9 Å (rest) · √(10·N/10^20.3)
    far = 1.5 * 2.9 * np.sqrt(10 * 10 ** (log_n - 20.3)) * (1 + z_abs)
    assert np.median(f[(lam > centre + far) & (lam < centre + far + 20)]) > 0.3 * cont
    assert np.abs(f[lam < 911.75 * (1 + z_abs) - 5]).mean() < 0.02 * cont  # optically thick


@pytest.mark.parametrize("population", POPULATIONS)
def test_every_population_is_produced_and_recorded(population):
    spec, meta = simulate_one(0, 10, POPULATIONS.index(population), SimConfig(),
                              population=population, snr=10.0)
    assert meta["population"] == population
    assert LABELS[meta["label"]]["top"] == TOP_OF_POPULATION[population]
    assert np.isfinite(preprocess(spec, DEFAULT_GRID).x).all()


def test_datasets_carry_the_population_and_the_evaluation_subsets():
    d = generate(SimConfig(), 40, 1, "test", cache_dir=None, progress=False)
    assert len(set(d["population"].tolist())) >= 8
    tops = TOP_OF_LABEL[d["label"]]
    for i, name in enumerate(POPULATIONS):
        sel = d["population"] == i
        assert (tops[sel] == ["GALAXY", "QSO", "STAR"].index(TOP_OF_POPULATION[name])).all()
    masks = population_masks(d, TOP_OF_LABEL)
    assert masks["faint (S/N < 3)"].sum() == (d["snr"] < 3).sum()
    pinned = generate(SimConfig(), 3, 1, "test", cache_dir=None, progress=False,
                      fixed={"population": "seyfert2"})
    assert (pinned["population"] == POPULATIONS.index("seyfert2")).all()


def test_boss_reaches_10400A_and_sdss_stops_at_9200A():
    for survey, lo, hi in (("boss", 3600, 10400), ("sdss", 3800, 9200)):
        spec, _ = simulate_one(0, 11, 0, SimConfig(), survey_name=survey, snr=10.0)
        assert spec.wavelength[0] == pytest.approx(lo, abs=2)
        assert spec.wavelength[-1] == pytest.approx(hi, abs=3)


def test_dichroic_crossover_is_noisier():
    def ivar_dip(dichroic: bool) -> float:
        cfg = clean(dichroic=dichroic, noise=True)
        spec, _ = simulate_one(0, 12, 0, cfg, survey_name="sdss", snr=20.0, label=LABEL_NAMES.index("STAR:F"))
        lam, iv = spec.wavelength, spec.ivar
        inside = np.median(iv[(lam > 5960) & (lam < 6040)])
        return inside / np.median(iv[((lam > 5600) & (lam < 5750)) | ((lam > 6250) & (lam < 6400))])

    assert ivar_dip(True) < 0.9 * ivar_dip(False)


# ---------------------------------------------------------------------- growable datasets
def test_generation_resumes_and_grows_chunk_by_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(simulate, "CHUNK", 3)
    made = []
    real = simulate._chunk
    monkeypatch.setattr(simulate, "_chunk", lambda job: made.append(job[2:4]) or real(job))
    cfg = SimConfig()
    small = generate(cfg, 5, 2, "val", cache_dir=tmp_path, progress=False)
    assert made == [(0, 3), (3, 5)]
    grown = generate(cfg, 8, 2, "val", cache_dir=tmp_path, progress=False)
    assert made[2:] == [(3, 6), (6, 8)]  # the first chunk came from the cache
    for k in small:
        np.testing.assert_array_equal(small[k], grown[k][:5])
    # A run killed after some chunks resumes with the missing ones only.
    (chunk,) = tmp_path.glob("spectra-val-*/00000003-00000006.npz")
    chunk.unlink()
    again = generate(cfg, 8, 2, "val", cache_dir=tmp_path, progress=False)
    assert made[4:] == [(3, 6)]
    for k in grown:
        np.testing.assert_array_equal(grown[k], again[k])
