"""specutils' own FITS output (``format="tabular-fits"``) read by the service
(service/spectra/readers/specutils_tabular.py).

The promise: a spectrum a specutils user saved reads as the same spectrum the client would
have sent as JSON arrays (the same unit conversion), and the shared SDSS file, read by
specutils and saved, reads as Specula's own SDSS reader reads the original.
"""

from __future__ import annotations

import importlib
import json
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import StdDevUncertainty
from specutils import Spectrum

from service.spectra import Source, read_spectra
from service.spectra.registry import SPECTRUM_READERS
from service.spectra.specutils_adapter import spectrum_to_arrays

FLAM = u.erg / u.s / u.cm**2 / u.AA
WAVE = np.linspace(3700.0, 9200.0, 400)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The reader registered for these tests only. Until readers/__init__.py imports it,
    registering it for good here would change what every later test of the session sees (the
    readers' list in unknown_format messages, identification)."""
    monkeypatch.setattr(SPECTRUM_READERS, "_readers", dict(SPECTRUM_READERS._readers))
    module = importlib.import_module("service.spectra.readers.specutils_tabular")
    if "specutils-tabular" not in SPECTRUM_READERS._readers:
        importlib.reload(module)  # imported before, into the registry as it was then
    return module


def saved(spec: Spectrum, tmp_path) -> Source:
    path = tmp_path / "spec.fits"
    spec.write(path, format="tabular-fits", overwrite=True)
    return Source.from_path(path)


def as_arrays(spec: Spectrum):
    _, spectra = read_spectra(Source(json.dumps(spectrum_to_arrays(spec)).encode(), "a.json"))
    return spectra


def test_a_saved_spectrum_reads_as_the_client_would_send_it(tmp_path):
    rng = np.random.default_rng(0)
    flux = (5 + rng.normal(0, 1, WAVE.size)) * 1e-17 * FLAM
    mask = np.zeros(WAVE.size, bool)
    mask[10:20] = True
    spec = Spectrum(spectral_axis=WAVE * u.AA, flux=flux, mask=mask,
                    uncertainty=StdDevUncertainty(np.full(WAVE.size, 0.5e-17) * FLAM))
    fmt, (s,) = read_spectra(saved(spec, tmp_path))
    assert fmt == "specutils-tabular"
    (ref,) = as_arrays(spec)
    np.testing.assert_allclose(s.wavelength, ref.wavelength)
    np.testing.assert_allclose(s.flux, ref.flux, rtol=1e-12)
    np.testing.assert_allclose(s.ivar[~s.mask], 4.0, rtol=1e-9)  # σ = 0.5 in 1e-17 units
    assert s.mask[10:20].all() and not s.mask[:10].any()


def test_frequency_axis_in_jansky_is_converted(tmp_path):
    nu = (WAVE * u.AA).to(u.GHz, u.spectral())
    fnu = (np.full(WAVE.size, 3e-17) * FLAM).to(u.Jy, u.spectral_density(WAVE * u.AA))
    _, (s,) = read_spectra(saved(Spectrum(spectral_axis=nu[::-1], flux=fnu[::-1]), tmp_path))
    np.testing.assert_allclose(s.wavelength, WAVE, rtol=1e-9)
    np.testing.assert_allclose(s.flux, 3.0, rtol=1e-6)


def test_several_spectra_and_counts(tmp_path):
    flux = np.arange(3 * WAVE.size, dtype=float).reshape(3, WAVE.size) * u.count
    _, spectra = read_spectra(saved(Spectrum(spectral_axis=WAVE * u.AA, flux=flux), tmp_path))
    assert len(spectra) == 3
    np.testing.assert_allclose(spectra[2].flux, flux[2].value)
    assert "not a spectral flux density" in spectra[0].meta["warnings"][0]


def test_shared_sdss_file_saved_by_specutils_reads_as_the_original(tmp_path, sdss_spec_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's unit warnings on SDSS headers
        spec = Spectrum.read(sdss_spec_path, format="SDSS-III/IV spec")
        source = saved(spec, tmp_path)
    fmt, (mine,) = read_spectra(source)
    _, (theirs,) = read_spectra(Source.from_path(sdss_spec_path))
    assert fmt == "specutils-tabular"
    np.testing.assert_allclose(mine.wavelength, theirs.wavelength, rtol=1e-6)
    good = ~mine.mask & ~theirs.mask
    assert good.mean() > 0.95
    np.testing.assert_allclose(mine.flux[good], theirs.flux[good], rtol=1e-5)
    np.testing.assert_allclose(mine.ivar[good], theirs.ivar[good], rtol=1e-4)


def test_other_fits_tables_are_not_identified(sdss_spec_path, registered):
    assert not registered.identify_specutils_tabular(Source.from_path(sdss_spec_path))
    assert not registered.identify_specutils_tabular(Source(b"{}", "x.json"))
