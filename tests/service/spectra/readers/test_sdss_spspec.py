"""sdss-spspec: SDSS-I/II spSpec files written with astropy (no real one ships)."""

from __future__ import annotations

import numpy as np
import pytest

from service.spectra import Source, SpectrumError, preprocess, read_spectra
from service.spectra.wavelength import air_to_vacuum
from tests.support.spectrum_writers import sdss_like_spectrum, write_spspec


def test_round_trip_onto_the_grid():
    s = sdss_like_spectrum(loglam0=3.5800)
    name, (r,) = read_spectra(Source(write_spspec(s, coeff0=3.5800),
                                     name="spSpec-51630-0266-007.fit"))
    assert name == "sdss-spspec"
    assert r.object_id == "0266-51630-0007"
    assert r.meta["class"] == "QSO" and r.meta["z"] == pytest.approx(1.52)
    assert (r.meta["ra"], r.meta["dec"]) == (145.0, -0.5)
    np.testing.assert_allclose(r.wavelength, s.wavelength, rtol=1e-6)  # s has float32 loglam
    np.testing.assert_array_equal(r.mask, s.mask)
    a, b = preprocess(s), preprocess(r)
    np.testing.assert_allclose(b.x, a.x, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(a.x[1] == 0, b.x[1] == 0)


def test_mask_bits_and_zero_error_are_bad():
    s = sdss_like_spectrum(masked=None)
    mask_row = np.zeros(s.npix, np.float32)
    mask_row[5] = 2.0**18  # FULLREJECT
    _, (r,) = read_spectra(Source(write_spspec(s, coeff0=3.5797, mask_row=mask_row)))
    assert np.flatnonzero(r.mask).tolist() == [5]


def test_air_header_is_converted_to_vacuum():
    s = sdss_like_spectrum(loglam0=3.5800)
    _, (r,) = read_spectra(Source(write_spspec(s, coeff0=3.5800, air=True)))
    np.testing.assert_allclose(r.wavelength, air_to_vacuum(10 ** (3.58 + 1e-4 * np.arange(s.npix))))
    assert r.wavelength[0] > 10**3.58  # vacuum is longer than air


def test_absurd_coefficients_are_bad_units():
    s = sdss_like_spectrum()
    with pytest.raises(SpectrumError) as e:
        read_spectra(Source(write_spspec(s, coeff0=35800.0)))
    assert e.value.code == "bad_units"
