"""sdss-spec: the real A0 star in ../shared, and full/lite/COADD-only files written here."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from service.spectra import Source, SpectrumError, preprocess, read_spectra
from tests.support.spectrum_writers import sdss_like_spectrum, write_sdss_spec


def test_real_file_reads_as_it_is(sdss_spec_path):
    name, (s,) = read_spectra(Source.from_path(sdss_spec_path))
    assert name == "sdss-spec"
    assert s.object_id == "1198-52669-0063"
    assert s.meta["class"] == "STAR" and s.meta["subclass"] == "A0"
    assert s.meta["z"] == pytest.approx(-0.00026359, abs=1e-8)
    assert s.meta["ra"] == pytest.approx(134.96218) and s.meta["dec"] == pytest.approx(38.983952)
    assert s.meta["survey"] == "sdss"
    with fits.open(sdss_spec_path) as h:  # every pixel as astropy reads it
        c = h["COADD"].data
        np.testing.assert_allclose(s.wavelength, 10.0 ** c["loglam"].astype(np.float64))
        bad = (c["ivar"] == 0) | (c["and_mask"] != 0)
        np.testing.assert_array_equal(s.mask, bad)
        np.testing.assert_array_equal(s.flux[~bad], c["flux"][~bad])
        np.testing.assert_array_equal(s.ivar[~bad], c["ivar"][~bad])
    assert s.npix == 3835 and 0 < s.mask.sum() < 10  # a few NEARBADPIXEL (bit 16) pixels
    p = preprocess(s)
    assert p.coverage > 0.9 and p.x.shape == (2, 4076)


@pytest.mark.parametrize("variant", ["full", "lite", "coadd-only"])
def test_written_variants_round_trip_onto_the_grid(variant):
    s = sdss_like_spectrum()
    data = write_sdss_spec(s, variant=variant, plate=1234, mjd=56789, fiber=12)
    name, (r,) = read_spectra(Source(data, name=f"spec-1234-56789-0012-{variant}.fits"))
    assert name == "sdss-spec"
    assert r.object_id == "1234-56789-0012"
    np.testing.assert_array_equal(r.mask, s.mask)
    a, b = preprocess(s), preprocess(r)
    np.testing.assert_allclose(b.x, a.x, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.x[1] == 0, b.x[1] == 0)  # same mask on the grid
    if variant == "coadd-only":
        assert "class" not in r.meta
    else:
        assert r.meta["class"] == "GALAXY" and r.meta["z"] == pytest.approx(0.1234)


def test_and_mask_bits_mask_pixels():
    s = sdss_like_spectrum(masked=None)
    am = np.zeros(s.npix, np.int32)
    am[10], am[20], am[30] = 1 << 16, 1 << 23, 1 << 0  # NEARBADPIXEL, BRIGHTSKY, NOPLUG
    _, (r,) = read_spectra(Source(write_sdss_spec(s, and_mask=am)))
    assert set(np.flatnonzero(r.mask)) == {10, 20, 30}


def test_object_id_from_file_name_when_header_lacks_it():
    s = sdss_like_spectrum()
    data = write_sdss_spec(s, variant="coadd-only")
    with fits.open(__import__("io").BytesIO(data)) as h:
        for k in ("PLATEID", "MJD", "FIBERID"):
            del h[0].header[k]
        buf = __import__("io").BytesIO()
        h.writeto(buf)
    _, (r,) = read_spectra(Source(buf.getvalue(), name="/x/spec-0266-51602-0001.fits"))
    assert r.object_id == "0266-51602-0001"


def test_coadd_missing_ivar_is_not_sdss():
    cols = [fits.Column("flux", "E", array=np.ones(10, np.float32)),
            fits.Column("loglam", "E", array=np.linspace(3.6, 3.7, 10).astype(np.float32))]
    buf = __import__("io").BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="COADD")]).writeto(buf)
    with pytest.raises(SpectrumError) as e:
        read_spectra(Source(buf.getvalue()))
    assert e.value.code == "unknown_format"
