"""Multi-object files come through as many spectra, each under its own id, none dropped:
a DESI coadd with all its targets (written from desidatamodel: FIBERMAP + B/R/Z cameras)
and ESO/4MOST SDP products, both as the standard's one-spectrum files and as a table of one
row per object. (SDSS spPlate: test_spplate.py; the specula exposure container:
readers/test_exposure.py; specutils' real DESI files: readers/test_desi_coadd.py.)
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from service.spectra import Source, SpectrumError, make_spectrum, preprocess, read_spectra
from tests.support.multi_object_files import write_eso_sdp_rows
from tests.support.spectrum_writers import sdss_like_spectrum, write_desi, write_eso_sdp

# DESI's cameras on their shared 0.8 Å lattice (desidatamodel coadd: B 3600–5930, R 5760–7620,
# Z 7520–9824 Å)
CAMERAS = {"B": (3600.0, 2914), "R": (5760.0, 2326), "Z": (7520.0, 2881)}
# TARGETIDs as DESI writes them: int64 beyond 2**53, where a float would lose digits
TARGETIDS = [39627652591521222 + 7919 * i for i in range(50)]
DEAD = {7, 31}  # targets whose every pixel is masked in every camera (a broken fibre)


def desi_coadd(seed: int = 5) -> bytes:
    rng = np.random.default_rng(seed)
    n = len(TARGETIDS)
    cams = {}
    for cam, (start, npix) in CAMERAS.items():
        wave = start + 0.8 * np.arange(npix)
        flux = 3 + np.sin(wave / 250)[None, :] * rng.uniform(0.5, 2, (n, 1))
        flux = flux + rng.normal(0, 0.3, (n, npix))
        ivar = np.full((n, npix), 1 / 0.09)
        mask = np.zeros((n, npix), np.uint32)
        mask[sorted(DEAD)] = 1
        cams[cam] = (wave, flux, ivar, mask)
    return write_desi(cams, TARGETIDS)


def test_desi_coadd_gives_every_target_under_its_targetid():
    name, spectra = read_spectra(Source(desi_coadd(), name="coadd-main-dark-10032.fits"))
    assert name == "desi-coadd"
    assert [s.object_id for s in spectra] == [str(t) for t in TARGETIDS]
    assert [s.meta["targetid"] for s in spectra] == TARGETIDS  # exact, not via float
    assert len({(s.meta["ra"], s.meta["dec"]) for s in spectra}) == len(TARGETIDS)
    for i, s in enumerate(spectra):
        assert s.wavelength[0] == 3600.0 and s.wavelength[-1] == pytest.approx(9824.0)
        if i in DEAD:  # returned, every pixel masked; refused only when preprocessed
            assert s.mask.all()
            with pytest.raises(SpectrumError) as e:
                preprocess(s)
            assert e.value.code == "empty_spectrum"
        else:
            assert preprocess(s).coverage == 1.0


def _rows(n: int = 5, npix: int = 3800):
    spectra = [sdss_like_spectrum(n=npix, seed=i) for i in range(n)]
    waves = np.stack([s.wavelength / 10 for s in spectra])  # nm
    fluxes = np.stack([s.flux for s in spectra])
    errs = np.stack([np.where(s.ivar > 0, 1 / np.sqrt(np.where(s.ivar > 0, s.ivar, 1)), 0)
                     for s in spectra])
    quals = np.stack([s.mask for s in spectra]).astype(np.int32)
    return spectra, (waves, fluxes, errs, quals)


def test_eso_table_of_one_row_per_object_gives_each_under_its_id():
    spectra, arrays = _rows()
    ids = [f"4MOST-{i:05d}" for i in range(len(spectra))]
    name, out = read_spectra(Source(write_eso_sdp_rows(*arrays, ids=ids)))
    assert name == "eso-sdp"
    assert [s.object_id for s in out] == ids
    assert [s.meta["ra"] for s in out] == pytest.approx(np.linspace(10.0, 10.1, len(ids)))
    for s, r in zip(spectra, out):
        np.testing.assert_allclose(r.wavelength, s.wavelength, rtol=1e-12)
        np.testing.assert_array_equal(r.mask, s.mask)
        np.testing.assert_allclose(r.ivar[~r.mask], s.ivar[~s.mask], rtol=1e-5)


def test_each_row_reads_as_its_own_single_spectrum_file():
    """Row i of a multi-row table and the standard one-row SDP file of the same spectrum give
    the same spectrum, so bundling changes nothing but the count."""
    spectra, arrays = _rows(n=3)
    _, rows = read_spectra(Source(write_eso_sdp_rows(*arrays)))
    for s, row in zip(spectra, rows):
        _, (single,) = read_spectra(Source(write_eso_sdp(s, unit="nm")))
        np.testing.assert_allclose(row.wavelength, single.wavelength, rtol=1e-14)  # nm: ulps
        np.testing.assert_array_equal(row.flux, single.flux)
        np.testing.assert_array_equal(row.ivar, single.ivar)
        np.testing.assert_array_equal(row.mask, single.mask)


def test_eso_rows_without_an_id_column_are_numbered_under_the_header_object():
    _, arrays = _rows(n=3)
    _, out = read_spectra(Source(write_eso_sdp_rows(*arrays, obj="OB 1234567")))
    assert [s.object_id for s in out] == ["OB 1234567#1", "OB 1234567#2", "OB 1234567#3"]


def test_an_integer_targetid_column_is_the_id():
    _, arrays = _rows(n=2)
    data = write_eso_sdp_rows(*arrays)
    with fits.open(io.BytesIO(data)) as h:
        cols = [fits.Column("TARGETID", "K", array=np.array([2**60 + 1, 2**60 + 2])),
                *h[1].columns]
        buf = io.BytesIO()
        fits.HDUList([h[0], fits.BinTableHDU.from_columns(cols, name="SPECTRUM")]).writeto(buf)
    _, out = read_spectra(Source(buf.getvalue()))
    assert [s.object_id for s in out] == [str(2**60 + 1), str(2**60 + 2)]


def test_a_float_id_column_is_bad_dtype():
    _, arrays = _rows(n=2)
    data = write_eso_sdp_rows(*arrays)
    with fits.open(io.BytesIO(data)) as h:
        cols = [fits.Column("OBJECT", "D", array=np.array([1.5, 2.5])), *h[1].columns]
        buf = io.BytesIO()
        fits.HDUList([h[0], fits.BinTableHDU.from_columns(cols, name="SPECTRUM")]).writeto(buf)
    with pytest.raises(SpectrumError) as e:
        read_spectra(Source(buf.getvalue()))
    assert e.value.code == "bad_dtype"


def test_a_table_of_one_pixel_per_row_is_not_an_sdp_spectrum():
    """WAVE/FLUX as scalar columns over many rows is another layout: not identified, and
    forced onto the ESO reader it is bad_shape, not a thousand one-pixel spectra."""
    s = make_spectrum(np.linspace(400, 900, 1000), np.ones(1000))
    table = fits.BinTableHDU.from_columns([
        fits.Column("WAVE", "D", unit="nm", array=s.wavelength),
        fits.Column("FLUX", "E", array=s.flux)])
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buf)
    with pytest.raises(SpectrumError) as e:
        read_spectra(Source(buf.getvalue()))
    assert e.value.code == "unknown_format"
    with pytest.raises(SpectrumError) as e:
        read_spectra(Source(buf.getvalue()), format="eso-sdp")
    assert e.value.code == "bad_shape"


def test_a_multi_object_delivery_of_single_spectrum_files_reads_file_by_file():
    """The SDP standard's own multi-object form: one file per object, each its own result."""
    for i in range(3):
        s = sdss_like_spectrum(seed=i)
        data = write_eso_sdp(s).replace(b"NGC 1234", f"OBJ-{i:04d}".encode())
        _, (r,) = read_spectra(Source(data, name=f"ADP.2026-12-03T00:00:0{i}.fits"))
        assert r.object_id == f"OBJ-{i:04d}"
