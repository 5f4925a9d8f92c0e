"""The optimised preprocessing gives the numbers models were trained on.

- the general path equals the original implementation (reference_preprocess.py) bit for bit;
- the aligned fast path (log-linear inputs at the grid's Δlog10λ) equals the general path to
  1e-6 and gives the same mask;
- normalise equals the original bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.spectra import DEFAULT_GRID, Source, make_spectrum, read_spectra
from service.spectra.preprocess import (
    LogLambdaGrid,
    _resample_aligned,
    _resample_general,
    normalise,
    pixel_edges,
    resample_to_grid,
)
from tests.support.reference_preprocess import reference_normalise, reference_resample

RUNS = {"aligned": 0, "general": 0}


def _parts(s):
    good = (~s.mask).astype(np.float64)
    var = np.divide(1.0, s.ivar, out=np.zeros_like(s.ivar), where=s.ivar > 0)
    return pixel_edges(s.wavelength), good, s.flux * good, var * good


def assert_same_as_reference(s, grid=DEFAULT_GRID, *, exact: bool):
    new, ref = resample_to_grid(s, grid), reference_resample(s, grid)
    np.testing.assert_array_equal(new.mask, ref.mask)
    assert new.coverage == ref.coverage
    if exact:
        np.testing.assert_array_equal(new.flux, ref.flux)
        np.testing.assert_array_equal(new.ivar, ref.ivar)
    else:
        np.testing.assert_allclose(new.flux, ref.flux, rtol=1e-6, atol=1e-6 * np.abs(ref.flux).max())
        np.testing.assert_allclose(new.ivar, ref.ivar, rtol=1e-6)
    np.testing.assert_array_equal(normalise(ref), reference_normalise(ref))
    x_new, x_ref = normalise(new), reference_normalise(ref)
    np.testing.assert_allclose(x_new, x_ref, rtol=1e-6, atol=1e-6)


def test_real_sdss_file_takes_the_fast_path_and_matches(sdss_spec_path):
    _, (s,) = read_spectra(Source.from_path(sdss_spec_path))
    parts = _parts(s)
    fast = _resample_aligned(*parts, DEFAULT_GRID)
    assert fast is not None, "SDSS log-linear input must take the aligned path"
    slow = _resample_general(*parts, DEFAULT_GRID)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert_same_as_reference(s, exact=False)


def test_general_path_is_bit_identical_on_real_desi(desi_paths):
    _, spectra = read_spectra(Source.from_path(desi_paths["coadd-sv3-dark-26065.fits"]))
    for s in spectra:
        assert _resample_aligned(*_parts(s), DEFAULT_GRID) is None  # 0.8 Å linear: general
        assert_same_as_reference(s, exact=True)


@st.composite
def loglinear_spectra(draw):
    """Inputs at the grid's Δlog10λ with a random sub-pixel offset, range, mask and noise."""
    d = DEFAULT_GRID.dloglam
    start = DEFAULT_GRID.loglam_start + draw(st.floats(-300, 3000)) * d
    n = draw(st.integers(20, 4500))
    jitter = draw(st.sampled_from([0.0, 1.0]))  # float32 loglam, as SDSS stores it
    loglam = start + d * np.arange(n)
    if jitter:
        loglam = loglam.astype(np.float32).astype(np.float64)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    flux = rng.normal(10, 3, n)
    ivar = rng.uniform(0.1, 5, n)
    mask = rng.random(n) < draw(st.floats(0, 0.5))
    return make_spectrum(10**loglam, flux, ivar, mask)


@settings(max_examples=150, deadline=None)
@given(loglinear_spectra())
def test_aligned_path_equals_general_path(s):
    parts = _parts(s)
    fast = _resample_aligned(*parts, DEFAULT_GRID)
    slow = _resample_general(*parts, DEFAULT_GRID)
    RUNS["aligned" if fast is not None else "general"] += 1
    if fast is not None:
        for a, b in zip(fast, slow):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    if s.wavelength[-1] > DEFAULT_GRID.edges[0] and s.wavelength[0] < DEFAULT_GRID.edges[-1]:
        assert_same_as_reference(s, exact=fast is None)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 6000), st.floats(3000, 8000),
       st.floats(0.05, 5.0))
def test_general_path_is_bit_identical_to_reference(seed, n, lam0, step):
    rng = np.random.default_rng(seed)
    wave = lam0 + np.cumsum(rng.uniform(0.2, 1.8, n) * step)
    s = make_spectrum(wave, rng.normal(5, 2, n), rng.uniform(0, 3, n), rng.random(n) < 0.1)
    if _resample_aligned(*_parts(s), DEFAULT_GRID) is None:
        assert_same_as_reference(s, exact=True)
    else:
        assert_same_as_reference(s, exact=False)


def test_shifted_grid_input_takes_the_fast_path():
    """An input on the grid's own Δlog10λ, offset by a third of a pixel (as SDSS is by 0.03)."""
    g = DEFAULT_GRID
    loglam = g.loglam_start + g.dloglam * (np.arange(g.npix) + 1 / 3)
    s = make_spectrum(10**loglam, np.linspace(1, 3, g.npix), np.ones(g.npix))
    assert _resample_aligned(*_parts(s), g) is not None
    assert_same_as_reference(s, g, exact=False)


def test_input_exactly_on_the_grid_is_unchanged_whichever_path():
    """Edges coincide to ~3e-5 px here, so the fast path may decline; numbers must not move."""
    g = LogLambdaGrid.from_range(3600.0, 9200.0, 1e-4)
    s = make_spectrum(g.wavelength, np.ones(g.npix) * 3, np.ones(g.npix))
    assert_same_as_reference(s, g, exact=_resample_aligned(*_parts(s), g) is None)


def test_hypothesis_exercised_both_paths():
    """The log-linear strategy must hit the fast path (else the parity test proves nothing).
    Prints the counts (pytest -s); runs after the property tests in file order."""
    print(f"\nparity cases by path: {RUNS}")
    if RUNS["aligned"] + RUNS["general"] == 0:
        pytest.skip("property test not run in this session")
    assert RUNS["aligned"] > 0


def test_input_wider_than_the_grid_takes_the_fast_path():
    """BOSS-like coverage (3550-10400 Å) runs past both grid ends: no end bins to sum."""
    g = DEFAULT_GRID
    loglam = np.log10(3550.0) + g.dloglam * (np.arange(4700) + 0.37)
    s = make_spectrum(10**loglam, np.linspace(1, 3, loglam.size), np.ones(loglam.size))
    assert _resample_aligned(*_parts(s), g) is not None
    assert_same_as_reference(s, g, exact=False)


def test_crowded_end_bin_declines_the_fast_path():
    """Thousands of input pixels inside the first output bin: general path, same numbers."""
    g = DEFAULT_GRID
    head = np.linspace(4000.0, 4000.3, 3000, endpoint=False)
    loglam = np.log10(4000.3) + g.dloglam * (np.arange(1000) + 0.5)
    wave = np.concatenate([head, 10**loglam])
    s = make_spectrum(wave, np.ones(wave.size), np.ones(wave.size))
    assert _resample_aligned(*_parts(s), g) is None
    assert_same_as_reference(s, g, exact=True)
