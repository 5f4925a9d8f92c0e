"""A fibre gets the same model input whether it comes alone or in an exposure.

``preprocess_many`` resamples and normalises spectra that share one wavelength array as blocks
of rows; these tests hold every row to the one-spectrum path bit for bit (masks, NaN and inf
pixels, dead fibres, partial coverage, both resampling paths), and the errors to the same codes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.spectra import DEFAULT_GRID, SpectrumError, make_spectrum, preprocess
from service.spectra.preprocess import BLOCK_ROWS, preprocess_many


def one_at_a_time(spectra, grid=DEFAULT_GRID):
    out = []
    for s in spectra:
        try:
            out.append(preprocess(s, grid))
        except SpectrumError as exc:
            out.append(exc)
    return out


def assert_same(block, single):
    assert len(block) == len(single)
    for b, s in zip(block, single):
        assert type(b) is type(s)
        if isinstance(s, SpectrumError):
            assert (b.code, b.detail) == (s.code, s.detail)
        else:
            np.testing.assert_array_equal(b.x, s.x)
            assert b.x.dtype == np.float32 and b.x.shape == s.x.shape
            assert (b.coverage, b.masked_fraction) == (s.coverage, s.masked_fraction)


def exposure(wave, n, rng, *, hostile=False):
    """n fibres on one wavelength array: noise, masks, and (hostile) the pixels surveys send."""
    spectra = []
    for i in range(n):
        flux = rng.normal(10, 3, wave.size) * rng.uniform(0.01, 100)
        ivar = rng.uniform(0.1, 5, wave.size)
        mask = rng.random(wave.size) < rng.uniform(0, 0.6)
        if hostile:
            kind = i % 7
            if kind == 1:
                flux[rng.integers(0, wave.size, 5)] = np.nan
            elif kind == 2:
                mask[:] = True  # a dead fibre
            elif kind == 3:
                flux[:] = 0.0  # median and mean 0: scale falls back to 1
            elif kind == 4:
                mask[:] = True
                mask[rng.integers(0, wave.size, 40)] = False  # a handful of good pixels
            elif kind == 5:
                flux[rng.integers(0, wave.size, 3)] = 1e308  # sums overflow to inf
            elif kind == 6:
                ivar[:] = 0.0
        spectra.append(make_spectrum(wave, flux, ivar, mask, {"object_id": str(i)}))
    return spectra


LINEAR = np.linspace(3700.0, 9500.0, 4600)  # 4MOST-like linear Å: the general path
LOGLIN = 10 ** (DEFAULT_GRID.loglam_start + DEFAULT_GRID.dloglam * (np.arange(3900) + 0.37))


@pytest.mark.parametrize("wave", [LINEAR, LOGLIN], ids=["linear-general", "loglinear-aligned"])
def test_exposure_rows_equal_single_spectra_bit_for_bit(wave):
    spectra = exposure(wave, 2 * BLOCK_ROWS + 5, np.random.default_rng(1), hostile=True)
    block, single = preprocess_many(spectra), one_at_a_time(spectra)
    assert_same(block, single)
    codes = {p.code for p in single if isinstance(p, SpectrumError)}
    assert codes == {"empty_spectrum"}  # the dead fibres, in place, not the whole exposure
    assert sum(isinstance(p, SpectrumError) for p in block) < len(block) // 2


def test_mixed_grids_keep_their_order_and_numbers():
    """Spectra from several files in one request: grouped by grid, answered in input order."""
    rng = np.random.default_rng(2)
    a, b = exposure(LINEAR, 5, rng), exposure(LOGLIN, 4, rng)
    lone = make_spectrum(np.linspace(5000.0, 5600.0, 300), np.ones(300), np.ones(300))
    far = make_spectrum(np.linspace(20000.0, 21000.0, 50), np.ones(50), np.ones(50))
    spectra = [a[0], b[0], lone, a[1], far, b[1], a[2], b[2], b[3], a[3], a[4]]
    block, single = preprocess_many(spectra), one_at_a_time(spectra)
    assert_same(block, single)
    assert block[4].code == "no_grid_overlap"


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 80), st.floats(3000, 8000),
       st.floats(0.2, 5.0), st.integers(20, 3000))
def test_any_shared_grid_gives_the_single_spectrum_numbers(seed, n, lam0, step, npix):
    rng = np.random.default_rng(seed)
    wave = lam0 + np.cumsum(rng.uniform(0.5, 1.5, npix) * step)
    spectra = exposure(wave, n, rng, hostile=True)
    assert_same(preprocess_many(spectra), one_at_a_time(spectra))


def test_exposure_container_decodes_to_what_make_spectrum_gives(tmp_path):
    """The container's fibres, validated as blocks on their shared grid, hold the numbers
    make_spectrum gives each fibre alone (NaN, inf, negative ivar and masks included)."""
    from service.spectra import Source, read_spectra
    from service.spectra.readers.exposure import write_exposure

    rng = np.random.default_rng(3)
    fibres = exposure(LINEAR, 150, rng, hostile=True)
    data = write_exposure(fibres)
    _, decoded = read_spectra(Source(data, name="exp.fits"))
    assert len(decoded) == len(fibres)
    assert all(d.wavelength is decoded[0].wavelength for d in decoded)  # shared: blocks
    for d, f in zip(decoded, fibres):
        ref = make_spectrum(LINEAR, f.flux.astype(np.float32), f.ivar.astype(np.float32),
                            f.mask, {"object_id": f.object_id})
        for a, b in ((d.flux, ref.flux), (d.ivar, ref.ivar), (d.mask, ref.mask)):
            assert a.tobytes() == b.tobytes()
        assert d.object_id == f.object_id
    assert_same(preprocess_many(decoded), one_at_a_time(decoded))


@pytest.mark.parametrize("case, code", [
    ("nan_grid", "non_finite"), ("decreasing_grid", "wavelength_not_increasing"),
    ("negative_grid", "bad_units"), ("rows_mismatch", "bad_shape"),
    ("text_flux", "bad_dtype"), ("float_mask", "bad_dtype"), ("empty_grid", "empty_spectrum"),
])
def test_make_spectra_refuses_what_make_spectrum_refuses(case, code):
    from service.spectra.spectrum import make_spectra

    wave, flux = np.linspace(4000.0, 8000.0, 50), np.ones((3, 50))
    ivar, mask, metas = np.ones((3, 50)), np.zeros((3, 50), bool), [{}, {}, {}]
    if case == "nan_grid":
        wave[7] = np.nan
    elif case == "decreasing_grid":
        wave = wave[::-1].copy()
    elif case == "negative_grid":
        wave = wave - 5000.0
    elif case == "rows_mismatch":
        metas = [{}, {}]
    elif case == "text_flux":
        flux = flux.astype(str)
    elif case == "float_mask":
        mask = mask.astype(float)
    elif case == "empty_grid":
        wave, flux, ivar, mask = wave[:0], flux[:, :0], ivar[:, :0], mask[:, :0]
    with pytest.raises(SpectrumError) as exc:
        make_spectra(wave, flux, ivar, mask, metas, source="exp.fits")
    assert exc.value.code == code and exc.value.source == "exp.fits"
