"""specutils spectra → the arrays document /v1 reads (service/spectra/specutils_adapter.py).

The promise: whatever units a specutils spectrum carries, the service receives vacuum Å,
1e-17 erg s⁻¹ cm⁻² Å⁻¹ and an inverse variance in that unit; and specutils' own reading of a
real SDSS file reaches the service as the same spectrum Specula's SDSS reader reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import astropy.units as u
import numpy as np
import pytest
import specutils
from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty
from specutils import Spectrum

from service.spectra import Source, read_spectra
from service.spectra.specutils_adapter import (
    FLUX_UNIT,
    is_specutils_spectrum,
    spectrum_to_arrays,
)
from service.spectra.wavelength import air_to_vacuum

FLAM = u.erg / u.s / u.cm**2 / u.AA
WAVE = np.linspace(4000.0, 8000.0, 50)


def read_back(doc):
    """What the service makes of the document: its arrays reader, on the JSON bytes."""
    fmt, spectra = read_spectra(Source(json.dumps(doc).encode(), "doc.json"))
    assert fmt == "arrays"
    return spectra


def test_flam_with_stddev_in_another_scale():
    flux = np.full(WAVE.size, 3e-16) * FLAM
    sigma = np.full(WAVE.size, 1e-16) * FLAM
    spec = Spectrum(spectral_axis=WAVE * u.AA, flux=flux, uncertainty=StdDevUncertainty(sigma))
    doc = spectrum_to_arrays(spec, object_id="a")
    np.testing.assert_allclose(doc["flux"], 30.0)
    np.testing.assert_allclose(doc["ivar"], 0.01)  # σ = 10 in 1e-17 units
    assert doc["object_id"] == "a" and not any(doc["mask"])
    (s,) = read_back(doc)
    np.testing.assert_allclose(s.wavelength, WAVE)


def test_fnu_on_a_frequency_axis_is_converted_and_reordered():
    nu = (WAVE * u.AA).to(u.Hz, u.spectral())  # decreasing with wavelength
    fnu = (np.full(WAVE.size, 2e-16) * FLAM).to(u.mJy, u.spectral_density(WAVE * u.AA))
    spec = Spectrum(spectral_axis=nu[::-1], flux=fnu[::-1],
                    uncertainty=VarianceUncertainty((0.1 * fnu[::-1]) ** 2))
    doc = spectrum_to_arrays(spec)
    np.testing.assert_allclose(doc["wavelength"], WAVE, rtol=1e-10)
    np.testing.assert_allclose(doc["flux"], 20.0, rtol=1e-8)
    np.testing.assert_allclose(doc["ivar"], 1 / 2.0**2, rtol=1e-8)


def test_inverse_variance_and_nm_axis_and_mask():
    flux = np.ones(WAVE.size) * FLUX_UNIT
    ivar = InverseVariance(np.full(WAVE.size, 4.0) * FLUX_UNIT**-2)
    mask = np.zeros(WAVE.size, bool)
    mask[3] = True
    f = flux.copy()
    f[7] = np.nan
    spec = Spectrum(spectral_axis=WAVE / 10 * u.nm, flux=f, uncertainty=ivar, mask=mask)
    doc = spectrum_to_arrays(spec)
    np.testing.assert_allclose(doc["wavelength"], WAVE)
    assert [i for i, m in enumerate(doc["mask"]) if m] == [3, 7]
    assert doc["flux"][7] == 0.0 and doc["ivar"][7] == 0.0
    assert doc["ivar"][0] == pytest.approx(4.0)
    (s,) = read_back(doc)
    assert s.mask[3] and s.mask[7] and not s.mask[0]


def test_air_wavelengths_become_vacuum():
    spec = Spectrum(spectral_axis=WAVE * u.AA, flux=np.ones(WAVE.size) * FLAM)
    np.testing.assert_allclose(spectrum_to_arrays(spec)["wavelength"], WAVE)  # vacuum assumed
    np.testing.assert_allclose(spectrum_to_arrays(spec, air=True)["wavelength"],
                               air_to_vacuum(WAVE))
    spec.meta["header"] = {"AIRORVAC": "air"}
    np.testing.assert_allclose(spectrum_to_arrays(spec)["wavelength"], air_to_vacuum(WAVE))


def test_counts_are_sent_as_they_are_with_a_warning():
    spec = Spectrum(spectral_axis=WAVE * u.AA, flux=np.full(WAVE.size, 7.0) * u.count)
    with pytest.warns(UserWarning, match="not a spectral flux density"):
        doc = spectrum_to_arrays(spec)
    np.testing.assert_allclose(doc["flux"], 7.0)


def test_several_spectra_on_one_axis_become_a_spectra_list():
    flux = np.arange(3 * WAVE.size, dtype=float).reshape(3, WAVE.size) * FLUX_UNIT
    doc = spectrum_to_arrays(Spectrum(spectral_axis=WAVE * u.AA, flux=flux), object_id="x")
    assert [d["object_id"] for d in doc["spectra"]] == ["x[0]", "x[1]", "x[2]"]
    assert len(read_back(doc)) == 3


def test_spectrum1d_alias_is_recognised():
    spec = Spectrum(spectral_axis=WAVE * u.AA, flux=np.ones(WAVE.size) * FLAM)
    assert is_specutils_spectrum(spec)
    assert not is_specutils_spectrum({"flux": [1.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Spectrum1D is deprecated in specutils >= 2
        old = specutils.Spectrum1D(spectral_axis=WAVE * u.AA, flux=np.ones(WAVE.size) * FLAM)
    assert is_specutils_spectrum(old)


def test_specutils_reading_of_a_real_sdss_file_is_the_same_spectrum(sdss_spec_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's unit warnings on SDSS headers
        spec = Spectrum.read(sdss_spec_path, format="SDSS-III/IV spec")
    (mine,) = read_back(spectrum_to_arrays(spec))
    _, (theirs,) = read_spectra(Source.from_path(sdss_spec_path))
    np.testing.assert_allclose(mine.wavelength, theirs.wavelength, rtol=1e-6)
    good = ~mine.mask & ~theirs.mask
    assert good.mean() > 0.95
    np.testing.assert_allclose(mine.flux[good], theirs.flux[good], rtol=1e-6)
    np.testing.assert_allclose(mine.ivar[good], theirs.ivar[good], rtol=1e-6)


def test_the_client_and_adapter_import_no_server_and_no_specutils():
    code = ("import sys, service.client, service.spectra.specutils_adapter; "
            "print(sorted(m for m in ('fastapi', 'starlette', 'onnxruntime', 'uvicorn', "
            "'torch', 'specutils') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
