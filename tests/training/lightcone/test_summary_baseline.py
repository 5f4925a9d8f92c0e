"""The power-spectrum + MLP baseline (training/lightcone/summary_baseline.py): the estimator's
normalisation and binning on cubes with a known spectrum, its symmetries, that it learns a
parameter the spectrum carries, and the CLI end to end on a synthetic dataset file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.cosmology import Planck18

from service.lightcones import NU21_MHZ, LightconeGrid
from tests.support.lc_training_helpers import tiny_config, write_fake_dataset
from training.lightcone import dataset
from training.lightcone.config import config_to_dict
from training.lightcone.evaluate import metrics
from training.lightcone.summary_baseline import (
    BaselineConfig,
    channel_depths_mpc,
    chunk_geometry,
    features,
    fit_ensemble,
    main,
    physical,
    power_spectra,
)
from training.lightcone.train import normalise_params, prior_arrays

GRID = LightconeGrid(16, 4.0, 32, 75.0, 200.0)
OMM = 0.31


def test_channel_depths_are_comoving_distances():
    d = channel_depths_mpc(GRID, OMM)
    z = NU21_MHZ / np.array([GRID.nu_max_mhz, GRID.nu_min_mhz]) - 1
    total = np.diff(Planck18.clone(Om0=OMM).comoving_distance(z).to_value("Mpc"))[0]
    assert d.sum() == pytest.approx(total, rel=1e-9)
    assert d[0] > d[-1]  # low frequency (high z) channels are deeper


def test_plane_wave_lands_in_its_k_bin():
    n_k = 6
    geo = chunk_geometry(GRID, 2, n_k, OMM)
    x = np.arange(GRID.n_xy) * GRID.cell_mpc
    for m in (1, 3, 6):
        k = 2 * math.pi * m / GRID.extent_mpc
        cube = np.broadcast_to(10 * np.cos(k * x)[:, None, None],
                               (GRID.n_xy, GRID.n_xy, GRID.n_los))[None]
        d2 = power_spectra(cube, GRID, 2, n_k, omm=OMM)[0]
        for j, g in enumerate(geo):
            want = int(np.digitize(k, g["k_edges"]) - 1)
            assert np.argmax(d2[j]) == want
            assert d2[j, want] > 0 and np.delete(d2[j], want).max() < 1e-6 * d2[j, want]


def _mean_k3(g):
    """Mean k³ over the modes of each bin (k⊥ ≠ 0), counted directly."""
    ks = [2 * math.pi * np.fft.fftfreq(n, d=c) for n, c in zip(g["shape"], g["cell_mpc"])]
    kx, ky, kz = np.meshgrid(*ks, indexing="ij")
    k = np.sqrt(kx ** 2 + ky ** 2 + kz ** 2)[(kx ** 2 + ky ** 2) > 0]
    b = np.digitize(k, g["k_edges"]) - 1
    return np.array([np.mean(k[b == j] ** 3) for j in range(len(g["k_centres"]))])


def test_white_noise_has_k_cubed_spectrum_with_the_right_amplitude():
    """White noise of rms σ: P(k) = σ² ΔV (mK² Mpc³), so Δ² = k³ σ² ΔV / 2π² (mK²)."""
    rng = np.random.default_rng(0)
    sigma, n_k = 3.0, 5
    cubes = rng.normal(0, sigma, (40, GRID.n_xy, GRID.n_xy, GRID.n_los))
    d2 = power_spectra(cubes, GRID, 2, n_k, omm=OMM).mean(axis=0)
    for j, g in enumerate(chunk_geometry(GRID, 2, n_k, OMM)):
        dv = float(np.prod(g["cell_mpc"]))
        ratio = d2[j] / (_mean_k3(g) * sigma ** 2 * dv / (2 * math.pi ** 2))
        np.testing.assert_allclose(ratio, 1.0, atol=0.1)
        slope = np.polyfit(np.log(g["k_centres"]), np.log(d2[j]), 1)[0]
        assert slope == pytest.approx(3.0, abs=0.25)


def test_features_ignore_sky_position_and_channel_means():
    rng = np.random.default_rng(1)
    cube = rng.normal(0, 5, (2, GRID.n_xy, GRID.n_xy, GRID.n_los)).astype(np.float32)
    f = features(cube, GRID, 4, 5, omm=OMM)
    assert f.shape == (2, 20) and f.dtype == np.float32
    rolled = np.roll(cube, (3, -5), axis=(1, 2))
    np.testing.assert_allclose(features(rolled, GRID, 4, 5, omm=OMM), f, atol=1e-4)
    np.testing.assert_allclose(features(cube.transpose(0, 2, 1, 3), GRID, 4, 5, omm=OMM), f,
                               atol=1e-4)
    # a global signal (any per-channel offset) is invisible, as to an interferometer
    glob = cube + np.linspace(-50, 20, GRID.n_los, dtype=np.float32)
    np.testing.assert_allclose(features(glob, GRID, 4, 5, omm=OMM), f, atol=1e-4)
    # a brighter cube has more power in every bin
    assert (features(2 * cube, GRID, 4, 5, omm=OMM) > f + 0.5).all()


def _synthetic(cfg, n, rng, grid):
    """Cubes whose fluctuation amplitude follows parameter 0 and whose large-scale share
    follows parameter 4 (smoothed noise); parameters 1–3 leave no trace."""
    low, high = prior_arrays(cfg)
    theta = low + (high - low) * rng.uniform(size=(n, len(low)))
    u = normalise_params(theta, cfg)
    white = rng.normal(size=(n, grid.n_xy, grid.n_xy, grid.n_los))
    smooth = sum(np.roll(white, (a, b), axis=(1, 2)) for a in (-1, 0, 1) for b in (-1, 0, 1))
    amp = 10 ** (2 * u[:, 0])
    cubes = amp[:, None, None, None] * (white + 2 * u[:, 4, None, None, None] * smooth)
    return cubes.astype(np.float32), theta


def test_learns_what_the_spectrum_carries():
    cfg = tiny_config()
    grid = LightconeGrid(8, 4.0, 16, 75.0, 200.0)
    bc = BaselineConfig(n_chunks=2, n_k=4, hidden=32, max_epochs=200, patience=20, members=3)
    rng = np.random.default_rng(2)
    feats, thetas = {}, {}
    for split, n in (("train", 200), ("val", 60), ("test", 120)):
        cubes, thetas[split] = _synthetic(cfg, n, rng, grid)
        feats[split] = features(cubes, grid, bc.n_chunks, bc.n_k, omm=bc.fiducial_omm)
    ys = {k: normalise_params(v, cfg) for k, v in thetas.items()}
    fit = fit_ensemble(feats, ys, bc, log=lambda *_: None)
    assert len(fit["nets"]) == 3 and (fit["sigma_scale"] >= 1.0).all()
    mean, sigma = physical(fit, feats["test"], cfg)
    m = metrics(thetas["test"], mean, sigma, cfg)
    names = cfg.param_names
    assert m[names[0]]["r2"] > 0.9 and m[names[4]]["r2"] > 0.5
    assert m[names[0]]["nll_norm"] < m[names[0]]["prior_baseline_nll_norm"] - 1.0
    for name in names[1:4]:  # not in the data: no skill, and σ says so
        assert m[name]["r2"] < 0.15 and m[name]["mean_sigma_over_prior_width"] > 0.2
    for name in names:  # σ only widened by the calibration: never badly under-covered
        assert m[name]["coverage_68"] >= 0.5 and m[name]["coverage_95"] >= 0.85
    # the unfloored validation scale makes the learned parameters' intervals about right
    fit["sigma_scale"] = fit["sigma_scale_raw"]
    m = metrics(thetas["test"], *physical(fit, feats["test"], cfg), cfg)
    for name in (names[0], names[4]):
        assert 0.55 <= m[name]["coverage_68"] <= 0.82 and m[name]["coverage_95"] >= 0.88


def test_cli_on_a_dataset_file(tmp_path):
    """The CLI end to end; the fake dataset's only signal is each cube's mean brightness,
    which the baseline must not see."""
    cfg = tiny_config(48)
    write_fake_dataset(cfg, tmp_path / "data")
    cfg_path = tmp_path / "tiny.json"
    cfg_path.write_text(json.dumps(config_to_dict(cfg)))
    out = tmp_path / "res.json"
    assert main(["--config", str(cfg_path), "--data-dir", str(tmp_path / "data"), "--chunks",
                 "2", "--k-bins", "2", "--members", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_train"] + res["n_val"] + res["n_test"] == dataset.describe(
        dataset.dataset_path(cfg, tmp_path / "data"))["accepted"]
    assert set(res["per_parameter"]) == set(cfg.param_names) == set(res["prior"])
    assert len(res["members"]) == 2 and len(res["chunks"]) == 2
    for name in ("ION_Tvir_MIN", "HII_EFF_FACTOR"):  # coded in the mean only
        assert res["per_parameter"][name]["r2"] < 0.5
