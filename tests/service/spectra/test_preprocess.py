"""The canonical grid: flux conserved, inverse variance propagated, uncovered pixels masked."""

import numpy as np
import pytest

from service.spectra import DEFAULT_GRID, SpectrumError, make_spectrum, preprocess
from service.spectra.preprocess import LogLambdaGrid, resample_to_grid


def test_default_grid_is_gasnets():
    assert DEFAULT_GRID.npix == 4076
    assert DEFAULT_GRID.wavelength[0] == pytest.approx(3600.0)
    assert DEFAULT_GRID.wavelength[-1] == pytest.approx(9200.0, abs=1.0)
    assert LogLambdaGrid.from_manifest(DEFAULT_GRID.to_manifest()) == DEFAULT_GRID


def test_identity_resampling_keeps_flux_and_ivar():
    g = DEFAULT_GRID
    flux = np.sin(g.wavelength / 50.0) + 2.0
    s = make_spectrum(g.wavelength, flux, np.full(g.npix, 4.0))
    r = resample_to_grid(s, g)
    assert not r.mask.any()
    np.testing.assert_allclose(r.flux, flux, atol=1e-5)
    np.testing.assert_allclose(r.ivar, 4.0, rtol=1e-3)


def test_flux_integral_is_conserved_on_finer_input():
    wave = 10 ** np.arange(np.log10(3500), np.log10(9500), 2.5e-5)
    flux = 1.0 + np.exp(-0.5 * ((wave - 6563.0) / 3.0) ** 2) * 40.0
    s = make_spectrum(wave, flux, np.full(wave.size, 1.0))
    r = resample_to_grid(s, DEFAULT_GRID)
    width = np.diff(DEFAULT_GRID.edges)
    line = (DEFAULT_GRID.wavelength > 6500) & (DEFAULT_GRID.wavelength < 6620)
    integral_out = np.sum((r.flux[line] - 1.0) * width[line])
    assert integral_out == pytest.approx(40.0 * 3.0 * np.sqrt(2 * np.pi), rel=1e-3)
    # averaging 4 independent pixels of unit variance quarters the variance (± partial edges)
    assert 3.5 < np.median(r.ivar) < 5.5


def test_masked_input_is_not_invented():
    g = DEFAULT_GRID
    mask = np.zeros(g.npix, bool)
    mask[1000:1100] = True
    s = make_spectrum(g.wavelength, np.ones(g.npix), np.ones(g.npix), mask)
    r = resample_to_grid(s, g)
    assert r.mask[1001:1099].all()
    assert not r.mask[:999].any() and not r.mask[1101:].any()


def test_partial_coverage_flags_uncovered_pixels():
    wave = np.linspace(5000.0, 7000.0, 3000)
    s = make_spectrum(wave, np.ones_like(wave), np.ones_like(wave))
    p = preprocess(s)
    inside = (DEFAULT_GRID.wavelength > 5001) & (DEFAULT_GRID.wavelength < 6999)
    assert (p.x[1, inside] > 0).all()
    assert (p.x[:, DEFAULT_GRID.wavelength < 4999] == 0).all()
    assert 0.2 < p.coverage < 0.5
    assert any("covers" in w for w in p.warnings())


def test_no_overlap_is_a_typed_error():
    wave = np.linspace(10000.0, 12000.0, 500)
    s = make_spectrum(wave, np.ones_like(wave))
    with pytest.raises(SpectrumError) as e:
        preprocess(s)
    assert e.value.code == "no_grid_overlap"


def test_normalisation_is_scale_invariant():
    g = DEFAULT_GRID
    rng = np.random.default_rng(0)
    flux = 5 + rng.normal(size=g.npix)
    a = preprocess(make_spectrum(g.wavelength, flux, np.full(g.npix, 2.0)))
    b = preprocess(make_spectrum(g.wavelength, flux * 1e-3, np.full(g.npix, 2.0e6)))
    np.testing.assert_allclose(a.x, b.x, rtol=1e-4, atol=1e-5)
    assert a.x.dtype == np.float32 and a.x.shape == (2, g.npix)
