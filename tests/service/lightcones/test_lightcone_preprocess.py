"""The shared preprocessing: coverage checks, exact nested resampling, fixed scaling."""

from __future__ import annotations

import numpy as np
import pytest

from service.lightcones import (
    NU21_MHZ,
    LightconeError,
    LightconeGrid,
    Source,
    make_lightcone,
    preprocess,
    read_lightcone,
    resample,
)
from service.lightcones.preprocess import (
    CLIP,
    MAX_PATCHES_PER_AXIS,
    overlap_matrix,
    patch_offsets,
    resample_patches,
    setup_warnings,
)

GRID = LightconeGrid(n_xy=4, cell_mpc=4.0, n_los=8, nu_min_mhz=140.0, nu_max_mhz=180.0,
                     scale_mk=100.0)


def fine_lightcone(grid: LightconeGrid, xy=2, los=3, seed=0, reverse=False):
    """A cube exactly on a grid nested inside ``grid`` (increasing redshift if reverse)."""
    fine = grid.refine(xy, los)
    rng = np.random.default_rng(seed)
    cube = rng.normal(0, 20, (fine.n_xy, fine.n_xy, fine.n_los)).astype(np.float32)
    nu = fine.frequencies_mhz
    if reverse:
        cube, nu = cube[:, :, ::-1], nu[::-1]
    return make_lightcone(cube, frequencies_mhz=nu, cell_mpc=fine.cell_mpc), cube


def test_overlap_rows_sum_to_one():
    w = overlap_matrix(np.linspace(0, 10, 37), np.linspace(1, 9, 5))
    np.testing.assert_allclose(w.sum(1), 1.0)


def test_nested_grid_is_block_mean():
    lc, cube = fine_lightcone(GRID)
    out, notes = resample(lc, GRID)
    expect = cube.reshape(4, 2, 4, 2, 8, 3).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-4)
    assert notes


def test_line_of_sight_direction_does_not_matter():
    a, _ = fine_lightcone(GRID)
    b, _ = fine_lightcone(GRID, reverse=True)
    np.testing.assert_allclose(resample(a, GRID)[0], resample(b, GRID)[0], atol=1e-5)


def test_two_step_equals_one_step():
    """simulator grid → dataset grid → model grid == simulator grid → model grid."""
    lc, _ = fine_lightcone(GRID, xy=4, los=4)
    mid = GRID.refine(2, 2)
    via, _ = resample(make_lightcone(resample(lc, mid)[0], frequencies_mhz=mid.frequencies_mhz,
                                     cell_mpc=mid.cell_mpc), GRID)
    np.testing.assert_allclose(via, resample(lc, GRID)[0], rtol=1e-5, atol=1e-4)


def test_bigger_sky_is_cropped_and_short_los_refused():
    rng = np.random.default_rng(1)
    nu = np.linspace(130, 190, 120)
    lc = make_lightcone(rng.normal(size=(20, 20, 120)), frequencies_mhz=nu, cell_mpc=1.0)
    out, notes = resample(lc, GRID)
    assert out.shape == (4, 4, 8)
    assert any("covering 64 %" in n for n in notes)  # the crop is said, not silent
    assert any(n.startswith("line of sight: z 6.48–9.93 given") for n in notes)
    short = make_lightcone(rng.normal(size=(20, 20, 50)), frequencies_mhz=nu[:50], cell_mpc=1.0)
    with pytest.raises(LightconeError) as e:
        resample(short, GRID)
    assert e.value.code == "no_grid_overlap"
    small = make_lightcone(rng.normal(size=(10, 10, 120)), frequencies_mhz=nu, cell_mpc=1.0)
    with pytest.raises(LightconeError) as e:
        resample(small, GRID)
    assert e.value.code == "no_grid_overlap"


def test_bare_cube_only_on_grid():
    on = make_lightcone(np.ones((4, 4, 8)))
    p = preprocess(on, GRID)
    assert p.x.shape == GRID.shape and np.allclose(p.x, 0.01)
    with pytest.raises(LightconeError) as e:
        preprocess(make_lightcone(np.ones((4, 4, 9))), GRID)
    assert e.value.code == "missing_axis"


def test_scaling_is_fixed_and_clipped():
    cube = np.full((4, 4, 8), 50.0)
    cube[0, 0, 0] = 1e6
    p = preprocess(make_lightcone(cube), GRID)
    assert p.x.dtype == np.float32 and p.x[0, 1, 1, 1] == pytest.approx(0.5)
    assert p.x.max() == CLIP


def test_real_file_onto_a_model_grid(simrun_path):
    _, lc = read_lightcone(Source.from_path(simrun_path))
    grid = LightconeGrid(16, 8.0, 32, NU21_MHZ / 13.0, NU21_MHZ / 7.0)
    p = preprocess(lc, grid)
    assert p.x.shape == (1, 16, 16, 32) and np.isfinite(p.x).all()
    # the mean over the covered region is conserved by overlap averaging (up to the crop)
    sel = (lc.redshifts > 6.0) & (lc.redshifts < 12.0)
    assert abs(p.x.mean() * 100 - lc.cube[:, :, sel].mean()) < 2.0


def test_manifest_roundtrip():
    assert LightconeGrid.from_manifest(GRID.to_manifest()) == GRID


def test_version_2_removes_each_channel_sky_mean_and_version_1_is_unchanged():
    lc, _ = fine_lightcone(GRID)
    cube, _ = resample(lc, GRID)
    v1 = preprocess(lc, GRID, version="lightcone-1")
    np.testing.assert_allclose(preprocess(lc, GRID).x, v1.x)  # the default stays lightcone-1
    np.testing.assert_allclose(v1.x[0], np.clip(cube / 100.0, -CLIP, CLIP), rtol=1e-6)
    shifted = make_lightcone(lc.cube + 37.0, frequencies_mhz=lc.frequencies_mhz,
                             cell_mpc=lc.cell_mpc)
    v2, v2s = preprocess(lc, GRID, version="lightcone-2"), preprocess(shifted, GRID,
                                                                      version="lightcone-2")
    np.testing.assert_allclose(v2.x[0].mean(axis=(0, 1)), 0.0, atol=1e-6)
    np.testing.assert_allclose(v2.x, v2s.x, atol=1e-5)  # a global signal leaves no trace
    np.testing.assert_allclose(v2.x[0], (cube - cube.mean(axis=(0, 1))) / 100.0, atol=1e-6)
    assert any("sky mean" in n for n in v2.notes)


def test_normalise_batches_like_single_cubes_and_refuses_unknown_versions():
    from service.lightcones.preprocess import normalise

    rng = np.random.default_rng(1)
    batch = rng.normal(0, 50, (3, GRID.n_xy, GRID.n_xy, GRID.n_los)).astype(np.float32)
    out = normalise(batch, GRID, "lightcone-2")
    assert out.shape == (3, 1, GRID.n_xy, GRID.n_xy, GRID.n_los)
    for i in range(3):
        np.testing.assert_array_equal(out[i], normalise(batch[i], GRID, "lightcone-2"))
    with pytest.raises(ValueError, match="lightcone-9"):
        normalise(batch, GRID, "lightcone-9")


def test_sky_patches_span_the_sky_and_each_is_its_own_crop():
    """A 40 Mpc sky for a 16 Mpc field: 3 patches per axis at 0, 12 and 24 Mpc, each exactly
    the resampling of the sub-cube it covers."""
    lc, _ = fine_lightcone(GRID.refine(1, 1), xy=2)
    big = np.random.default_rng(5).normal(0, 20, (20, 20, lc.shape[2])).astype(np.float32)
    lc = make_lightcone(big, frequencies_mhz=lc.frequencies_mhz, cell_mpc=2.0)
    cubes, sky, notes = resample_patches(lc, GRID)
    assert sky.offsets_mpc == ((0.0, 12.0, 24.0),) * 2 and sky.count == 9
    assert cubes.shape == (9, 4, 4, 8) and sky.covered_fraction == 1.0
    assert any("9 patches" in n for n in notes)
    for k, (ox, oy) in enumerate([(a, b) for a in (0, 6, 12) for b in (0, 6, 12)]):
        sub = make_lightcone(big[ox:ox + 8, oy:oy + 8], frequencies_mhz=lc.frequencies_mhz,
                             cell_mpc=2.0)
        np.testing.assert_allclose(cubes[k], resample(sub, GRID)[0], rtol=1e-5, atol=1e-4)


def test_patches_are_capped_and_the_fraction_seen_is_said():
    nu = GRID.frequencies_mhz
    lc = make_lightcone(np.zeros((100, 60, 8), np.float32), frequencies_mhz=nu, cell_mpc=1.0)
    sky = resample_patches(lc, GRID)[1]
    assert [len(o) for o in sky.offsets_mpc] == [MAX_PATCHES_PER_AXIS, 4]
    assert sky.offsets_mpc[0][-1] == 100 - 16  # the last patch ends at the sky's far edge
    assert sky.covered_fraction == pytest.approx(64 / 100)
    assert patch_offsets(16.0 + 1e-9, 16.0, 4) == (0.0,)  # no second patch for a rounding


def test_setup_warnings_name_what_differs_from_training():
    nu = np.linspace(140.0, 180.0, 4)  # 10 MHz channels for a 5 MHz grid
    coarse = make_lightcone(np.zeros((4, 4, 4), np.float32), frequencies_mhz=nu, cell_mpc=8.0)
    w = setup_warnings(coarse, GRID, np.zeros(GRID.shape, np.float32))
    assert len(w) == 2 and "coarser" in w[0] and "wider" in w[1]
    fine, _ = fine_lightcone(GRID)
    hot = np.full(GRID.shape, CLIP, np.float32)
    assert setup_warnings(fine, GRID, np.zeros(GRID.shape, np.float32)) == []
    assert "clipped" in setup_warnings(fine, GRID, hot)[0]
