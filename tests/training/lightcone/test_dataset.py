"""Dataset builder pieces that need no simulator: deterministic draws, splits, the τ screen,
resumption; plus one real 21cmFAST run when py21cmfast is installed (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.lc_training_helpers import tiny_config
from training.lightcone import dataset
from training.lightcone.config import LightconeConfig
from training.lightcone.simulate import STATUS, SimResult, draw


def test_draws_are_a_function_of_seed_and_index():
    cfg = LightconeConfig()
    a, sa = draw(cfg, 17)
    b, sb = draw(cfg, 17)
    assert np.array_equal(a, b) and sa == sb
    assert not np.array_equal(a, draw(cfg, 18)[0])
    for p, v in zip(cfg.priors(), a):
        assert p.low <= v <= p.high


def test_splits_are_stable_and_sized():
    cfg = LightconeConfig()
    s = dataset.split_of(np.arange(10000), cfg)
    assert abs((s == "test").mean() - cfg.data.test_fraction) < 0.01
    assert abs((s == "val").mean() - cfg.data.val_fraction) < 0.01
    assert (dataset.split_of(np.arange(100), cfg) == s[:100]).all()


def test_tau_screen_only_skips_far_above_the_cut(tmp_path):
    cfg = tiny_config(n_sims=300)
    f = dataset._open(tmp_path / "d.h5", cfg, cfg.data.n_sims)
    screen = dataset.TauScreen(cfg, min_runs=40)
    names = cfg.param_names

    def tau_true(p):  # a smooth τ(ζ, T_vir) like the real one
        return 0.03 + 0.03 * np.log(p[names.index("HII_EFF_FACTOR")] / 10) \
            - 0.03 * (p[names.index("ION_Tvir_MIN")] - 4.0)

    for i in range(60):
        p, seed = draw(cfg, i)
        t = tau_true(p)
        st = STATUS["accepted"] if t <= cfg.sim.tau_max else STATUS["rejected_tau"]
        dataset._write(f, SimResult(i, st, p, seed, t, 0.0, 1.0, None))
    skipped = [i for i in range(60, 300) if screen.skip(i, f)]
    assert skipped, "a clearly-above draw should be screened"
    for i in skipped:  # never a draw whose true τ passes the cut
        assert tau_true(draw(cfg, i)[0]) > cfg.sim.tau_max
    f.close()


def test_resume_keeps_finished_rows(tmp_path):
    cfg = tiny_config(n_sims=6)
    f = dataset._open(tmp_path / "d.h5", cfg, 6)
    p, seed = draw(cfg, 2)
    dataset._write(f, SimResult(2, STATUS["rejected_xhi"], p, seed, 0.05, 0.4, 3.0, None))
    f.close()
    cfg.data.n_sims = 10  # a bigger build extends the same file
    f = dataset._open(tmp_path / "d.h5", cfg, 10)
    st = f["status"][()]
    f.close()
    assert len(st) == 10 and st[2] == STATUS["rejected_xhi"] and (np.delete(st, 2) == 0).all()


@pytest.mark.slow
def test_one_real_21cmfast_lightcone():
    pytest.importorskip("py21cmfast", reason="runs 21cmFAST itself (py21cmfast builds only "
                        "with Debian's libfftw3-dev and libgsl-dev)")
    from training.lightcone.simulate import simulate

    cfg = tiny_config()
    r = simulate(cfg, 1)
    assert r.status in (STATUS["accepted"], STATUS["rejected_tau"], STATUS["rejected_xhi"]), r.error
    assert np.isfinite(r.tau) and 0 < r.tau < 0.3
    if r.status == STATUS["accepted"]:
        g = cfg.grid.dataset_grid()
        assert r.cube.shape == (g.n_xy, g.n_xy, g.n_los) and r.cube.dtype == np.float16


def test_noise_option(tmp_path):
    """SKA1-Low noise on a model-grid cube (tools21cm; uv coverage computed once, cached)."""
    pytest.importorskip("tools21cm")
    from training.lightcone.noise import ThermalNoise, observe, uv_maps

    cfg = tiny_config()
    uvs = uv_maps(cfg, tmp_path, log=lambda m: None)
    assert uvs["uv"].shape == (2, 4, 4) and list(tmp_path.glob("uv-*.npz"))
    again = uv_maps(cfg, tmp_path, log=lambda m: pytest.fail("not cached"))
    np.testing.assert_array_equal(again["uv"], uvs["uv"])
    cube = np.random.default_rng(0).normal(0, 10, (4, 4, 16)).astype(np.float32)
    noise, grid = ThermalNoise(cfg, uvs), cfg.grid.model_grid()
    a = observe(cube, grid, noise, np.random.default_rng(1))
    b = observe(cube, grid, noise, np.random.default_rng(1))
    assert a.shape == cube.shape and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)  # seeded
    assert not np.allclose(a, cube)
    np.testing.assert_allclose(a.mean(axis=(0, 1)), 0.0, atol=1e-3)  # channel means removed
