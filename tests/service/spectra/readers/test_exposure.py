"""specula-exposure: the whole-exposure container, written by write_exposure."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from service.spectra import (
    DEFAULT_GRID,
    Source,
    SpectrumError,
    make_spectrum,
    preprocess,
    read_spectra,
)
from service.spectra.readers.exposure import write_exposure
from tests.support.spectrum_writers import sdss_like_spectrum


def _fibres(n: int, npix: int = 3800, shared: bool = True):
    out = []
    for i in range(n):
        s = sdss_like_spectrum(n=npix, seed=i, masked=slice(i % 50, i % 50 + 5),
                               loglam0=3.5797 if shared else 3.5797 + 1e-5 * i)
        s.meta.update(object_id=f"obj-{i}", fibre=i + 1)
        out.append(s)
    return out


@pytest.mark.parametrize("shared", [True, False])
def test_round_trip_onto_the_grid(shared):
    fibres = _fibres(40, shared=shared)
    data = write_exposure(fibres, header={"EXPID": 1234})
    with fits.open(__import__("io").BytesIO(data)) as h:  # the documented layout
        assert h[0].header["SPECFMT"] == "specula-exposure" and h[0].header["NFIBRE"] == 40
        assert ("WAVELENGTH" in h) == shared
        assert h["FIBRES"].columns.names[:5] == ["OBJECT_ID", "FIBRE", "FLUX", "IVAR", "MASK"]
    name, out = read_spectra(Source(data, name="exposure.fits"))
    assert name == "specula-exposure" and len(out) == 40
    for s, r in zip(fibres, out):
        assert r.object_id == s.object_id and r.meta["fibre"] == s.meta["fibre"]
        assert r.meta["expid"] == 1234
        np.testing.assert_array_equal(r.wavelength, s.wavelength)
        np.testing.assert_array_equal(r.mask, s.mask)
        np.testing.assert_allclose(preprocess(r).x, preprocess(s).x, rtol=1e-6, atol=1e-6)


def test_full_exposure_of_2436_fibres_fits_the_input_limit():
    n, npix = 2436, DEFAULT_GRID.npix
    rng = np.random.default_rng(0)
    flux = rng.normal(10, 1, (n, npix)).astype(np.float32)
    fibres = [make_spectrum(DEFAULT_GRID.wavelength, flux[i], np.ones(npix),
                            meta={"object_id": str(i)}) for i in range(n)]
    data = write_exposure(fibres)
    src = Source(data)  # within DEFAULT_MAX_BYTES
    _, out = read_spectra(src)
    assert len(out) == n and out[-1].object_id == str(n - 1)
    np.testing.assert_array_equal(out[1234].flux, flux[1234])


def test_one_fibre_with_wave_column_is_not_taken_for_eso_sdp():
    """A one-row container with a WAVE column also looks like an ESO table: priority decides."""
    s1 = sdss_like_spectrum()
    s2 = sdss_like_spectrum(loglam0=3.58)
    data = write_exposure([s1, s2])
    with fits.open(__import__("io").BytesIO(data)) as h:
        one = fits.HDUList([h[0], fits.BinTableHDU(h["FIBRES"].data[:1], header=h["FIBRES"].header)])
        buf = __import__("io").BytesIO()
        one.writeto(buf)
    name, (r,) = read_spectra(Source(buf.getvalue()))
    assert name == "specula-exposure" and r.npix == s1.npix


def test_mixed_pixel_counts_cannot_be_written():
    with pytest.raises(SpectrumError) as e:
        write_exposure([sdss_like_spectrum(n=100), sdss_like_spectrum(n=200)])
    assert e.value.code == "bad_shape"


def test_grid_length_mismatch_is_bad_shape():
    data = write_exposure(_fibres(2))
    with fits.open(__import__("io").BytesIO(data)) as h:
        h["WAVELENGTH"].data = h["WAVELENGTH"].data[:-1]
        buf = __import__("io").BytesIO()
        h.writeto(buf)
    with pytest.raises(SpectrumError) as e:
        read_spectra(Source(buf.getvalue()))
    assert e.value.code == "bad_shape"
