"""Thermal noise (vectorised, checked against tools21cm's own noise_map) and foreground-wedge
removal on cubic comoving cells (noise.wedge_remove), with real tools21cm."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from service.lightcones import LightconeGrid
from tests.support.lc_training_helpers import tiny_config
from training.lightcone.noise import ThermalNoise, comoving_edges, observe

t2c = pytest.importorskip("tools21cm")


def fake_uvs(n: int, k: int = 2) -> dict[str, np.ndarray]:
    """A uv-count map per redshift (the real one costs seconds to minutes per redshift); the
    noise arithmetic under test does not care where the counts come from. One cell unsampled."""
    rng = np.random.default_rng(3)
    uv = rng.uniform(1.0, 50.0, (k, n, n))
    uv[:, 1, 2] = 0.0
    return {"z": np.linspace(6.5, 17.0, k), "uv": uv, "n_ant": np.array(512)}


def test_thermal_noise_reproduces_tools21cm_noise_map():
    cfg = tiny_config()
    grid, nc = cfg.grid.model_grid(), cfg.noise
    uvs = fake_uvs(grid.n_xy)
    noise = ThermalNoise(cfg, uvs)
    ours = noise.sample(np.random.default_rng(7), 2)
    rng = np.random.default_rng(7)  # the same draws, in the order noise_map makes them
    depth = np.abs(np.diff(grid.nu_edges))
    for c in range(2):
        for k, z in enumerate(grid.redshifts):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                jy = t2c.noise_map(grid.n_xy, float(z), float(depth[k]), obs_time=nc.obs_time_h,
                                   subarray_type=nc.subarray, boxsize=grid.extent_mpc,
                                   total_int_time=nc.total_int_time_h, int_time=nc.int_time_s,
                                   uv_map=uvs["uv"][noise.uv_index[k]], N_ant=512,
                                   verbose=False, seed=rng)
                ref = t2c.jansky_2_kelvin(jy, float(z), boxsize=grid.extent_mpc)
            np.testing.assert_allclose(ours[c, :, :, k], ref, rtol=1e-4,
                                       atol=1e-5 * np.abs(ref).max())


def test_thermal_noise_scales_with_observing_time():
    cfg = tiny_config()
    uvs = fake_uvs(cfg.grid.n_xy)
    a = ThermalNoise(cfg, uvs, obs_time_h=100.0)
    b = ThermalNoise(cfg, uvs, obs_time_h=400.0)
    np.testing.assert_allclose(a.amplitude / b.amplitude, 2.0, rtol=1e-9)  # ∝ 1/√t
    draws = a.sample(np.random.default_rng(0), 400)
    np.testing.assert_allclose(draws.std(axis=(0, 1, 2)), a.rms(), rtol=0.1)
    assert draws.dtype == np.float32 and draws.shape == (400, *cfg.grid.model_grid().shape[1:])


def test_observe_without_noise_only_removes_channel_means():
    cfg = tiny_config()
    grid = cfg.grid.model_grid()
    cube = np.random.default_rng(0).normal(5.0, 2.0, grid.shape[1:]).astype(np.float32)
    out = observe(cube, grid, None, np.random.default_rng(0))
    np.testing.assert_allclose(out, cube - cube.mean(axis=(0, 1)), atol=1e-5)


def plane_wave(grid: LightconeGrid, omm: float, k_perp: float, k_par: float) -> np.ndarray:
    """cos(2π(k_perp·x + k_par·d)) on the model grid, d the comoving distance of each channel
    (frequency ascending); k in cycles/Mpc like tools21cm's fftfreq."""
    d_edges = comoving_edges(grid, omm)[::-1]  # frequency order
    d = 0.5 * (d_edges[1:] + d_edges[:-1])
    x = (np.arange(grid.n_xy) + 0.5) * grid.cell_mpc
    return np.cos(2 * np.pi * (k_perp * x[:, None, None] + k_par * d[None, None, :])
                  ) * np.ones((1, grid.n_xy, 1))


def test_wedge_removal_keeps_modes_outside_and_removes_inside():
    """On a grid with ~1 Mpc channels (z 7.9–10.4), regridded to 4 Mpc cubic cells: with a
    128-cell chunk tools21cm's buffer is 18/(128·4 Mpc) ≈ 0.035 cycles/Mpc and the wedge slope
    ≈ 3.5–3.9, so k_perp = 1/64, k_par = 0.11 (threshold ≈ 0.09) lies outside the wedge and
    k_perp = 4/64 (threshold ≈ 0.27) inside."""
    from training.lightcone.noise import cubic_regrid, wedge_remove

    grid = LightconeGrid(16, 4.0, 600, 125.0, 160.0)
    up, down, _ = cubic_regrid(grid, 0.31)
    core = slice(100, 500)  # away from the band ends, where the chunk is zero-padded
    kept = {}
    for name, kp in (("outside", 1 / 64), ("inside", 4 / 64)):
        c = plane_wave(grid, 0.31, kp, 0.11)
        # what the 4 Mpc cells can hold of a 9 Mpc wave: the reference for "kept"
        ref = ((c[:, :, ::-1] @ up.T) @ down.T)[:, :, ::-1]
        w = wedge_remove(c, grid, 0.31, chunk_cells=128)
        kept[name] = float((w[..., core] ** 2).sum() / (ref[..., core] ** 2).sum())
    assert kept["outside"] > 0.7, kept
    assert kept["inside"] < 1e-3, kept


def test_wedge_removal_leaves_nothing_on_one_megahertz_channels():
    """The model grid's ~1 MHz channels are 14–24 Mpc deep: their Nyquist k_par (≤ 0.035
    cycles/Mpc) is below the wedge + buffer of every k_perp, so nothing survives — why v3 is
    trained without it."""
    from training.lightcone.noise import wedge_remove

    grid = LightconeGrid(16, 4.0, 128, 75.0, 200.0)
    cube = np.random.default_rng(0).normal(0, 10, grid.shape[1:])
    cube -= cube.mean(axis=(0, 1))
    w = wedge_remove(cube, grid, 0.31)
    assert w.shape == cube.shape
    assert (w.astype(np.float64) ** 2).sum() < 1e-6 * (cube ** 2).sum()


def test_per_cube_observing_times():
    cfg = tiny_config()
    noise = ThermalNoise(cfg, fake_uvs(cfg.grid.n_xy), obs_time_h=1000.0)
    assert noise.draw_times(np.random.default_rng(0), 3, []) is None  # fixed time
    t = noise.draw_times(np.random.default_rng(0), 500, [300.0, 1e5])
    assert t.min() >= 300.0 and t.max() <= 1e5
    assert 0.4 < np.mean(np.log(t) < np.log(np.sqrt(300.0 * 1e5))) < 0.6  # log-uniform
    fixed = noise.sample(np.random.default_rng(4), 2)
    timed = noise.sample(np.random.default_rng(4), 2, np.array([1000.0, 4000.0]))
    np.testing.assert_allclose(timed[0], fixed[0], rtol=1e-6)
    np.testing.assert_allclose(timed[1], fixed[1] / 2.0, rtol=1e-5, atol=1e-7)
