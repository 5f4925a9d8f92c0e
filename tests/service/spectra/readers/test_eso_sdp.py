"""eso-sdp: ESO Phase 3 1D spectra written with astropy: units, air → vacuum, QUAL."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u

from service.spectra import Source, SpectrumError, make_spectrum, preprocess, read_spectra
from service.spectra.wavelength import air_to_vacuum
from tests.support.spectrum_writers import sdss_like_spectrum, write_eso_sdp


@pytest.mark.parametrize("unit", ["nm", "Angstrom", "um"])
def test_units_round_trip_onto_the_grid(unit):
    s = sdss_like_spectrum()
    name, (r,) = read_spectra(Source(write_eso_sdp(s, unit=unit), name="ADP.2020.fits"))
    assert name == "eso-sdp"
    assert r.object_id == "NGC 1234" and r.meta["ra"] == 10.5
    assert r.meta["air_to_vacuum"] is False
    np.testing.assert_allclose(r.wavelength, s.wavelength, rtol=1e-12)
    np.testing.assert_array_equal(r.mask, s.mask)
    a, b = preprocess(s), preprocess(r)
    np.testing.assert_allclose(b.x, a.x, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.x[1] == 0, b.x[1] == 0)


def test_air_wavelengths_are_converted_to_vacuum():
    specutils_wcs = pytest.importorskip("specutils.utils.wcs_utils")
    s = sdss_like_spectrum()
    air = specutils_wcs.vac_to_air(s.wavelength * u.AA, method="Morton2000").to_value(u.AA)
    _, (r,) = read_spectra(Source(write_eso_sdp(s, air=True, wave_values=air)))
    assert r.meta["air_to_vacuum"] is True
    # back to the vacuum wavelengths we started from (two published inversions agree ~1e-8)
    np.testing.assert_allclose(r.wavelength, s.wavelength, rtol=2e-8)
    a, b = preprocess(s), preprocess(r)
    np.testing.assert_allclose(b.x, a.x, rtol=1e-3, atol=1e-3)


def test_air_to_vacuum_matches_specutils_piskunov():
    specutils_wcs = pytest.importorskip("specutils.utils.wcs_utils")
    air = np.linspace(3000.0, 11000.0, 500)
    ref = specutils_wcs.air_to_vac(air * u.AA, scheme="Piskunov").to_value(u.AA)
    np.testing.assert_allclose(air_to_vacuum(air), ref, rtol=1e-12)
    assert air_to_vacuum(np.array([6562.80]))[0] == pytest.approx(6564.61, abs=0.01)  # Hα


def test_error_in_other_unit_is_converted():
    s = sdss_like_spectrum()
    _, (r,) = read_spectra(Source(write_eso_sdp(s, err_unit="W m**(-2) nm**(-1)")))
    # 1 W m^-2 nm^-1 = 1e3 * 1e-7 ... the writer scaled ERR by 1/1e-7 in these units
    good = ~r.mask
    ratio = r.ivar[good] / s.ivar[good]
    assert np.allclose(ratio, ratio[0], rtol=1e-5)


@pytest.mark.parametrize("bad", [b"'blorp   '", b"'Hz      '", b"'        '"])
def test_unknown_or_non_length_wave_unit_is_bad_units(bad):
    s = make_spectrum(np.linspace(4000, 5000, 100), np.ones(100))
    data = write_eso_sdp(s, unit="nm").replace(b"TUNIT1  = 'nm      '", b"TUNIT1  = " + bad)
    with pytest.raises(SpectrumError) as e:
        read_spectra(Source(data))
    assert e.value.code == "bad_units"
