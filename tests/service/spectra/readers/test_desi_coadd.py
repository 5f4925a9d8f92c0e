"""desi-coadd: specutils' real DESI files (from the installed package) and a written one."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from service.spectra import Source, preprocess, read_spectra
from tests.support.spectrum_writers import write_desi


@pytest.mark.parametrize("fname", ["coadd-5-169-thru20210419.fits", "coadd-sv3-dark-26065.fits",
                                   "spectra-5-169-thru20210419.fits",
                                   "spectra-sv3-dark-26065.fits"])
def test_real_files_give_one_spectrum_per_target(desi_paths, fname):
    path = desi_paths[fname]
    name, spectra = read_spectra(Source.from_path(path))
    assert name == "desi-coadd"
    with fits.open(path) as h:
        tids = [str(t) for t in h["FIBERMAP"].data["TARGETID"]]
        b, r, z = (h[f"{c}_WAVELENGTH"].data for c in "BRZ")
        cams = {c: (h[f"{c}_FLUX"].data, h[f"{c}_IVAR"].data, h[f"{c}_MASK"].data) for c in "BRZ"}
    assert [s.object_id for s in spectra] == tids
    union = np.unique(np.round(np.concatenate([b, r, z]), 3))
    for i, s in enumerate(spectra):
        assert s.meta["survey"] == "desi" and s.meta["targetid"] == int(tids[i])
        np.testing.assert_allclose(s.wavelength, union)
        assert s.wavelength[0] == 3600.0 and s.wavelength[-1] == pytest.approx(9824.0)
        # the B/R overlap pixel at 5780 Å: inverse-variance weighted mean of the two cameras
        fb, ib, mb = (a[i][np.argmin(np.abs(b - 5780.0))] for a in cams["B"])
        fr, ir, mr = (a[i][np.argmin(np.abs(r - 5780.0))] for a in cams["R"])
        wb, wr = (0.0 if mb else ib), (0.0 if mr else ir)
        k = np.argmin(np.abs(s.wavelength - 5780.0))
        if wb + wr > 0:
            assert s.flux[k] == pytest.approx((wb * fb + wr * fr) / (wb + wr), rel=1e-5)
            assert s.ivar[k] == pytest.approx(wb + wr, rel=1e-6)
        else:
            assert s.mask[k]
    observed = [s for s in spectra if s.masked_fraction < 0.5]
    assert observed, "each test file has at least one observed target"
    for s in observed:
        p = preprocess(s)
        assert p.coverage == 1.0 and p.masked_fraction < 0.1


def test_written_file_merges_cameras_by_inverse_variance():
    wb = 3600 + 0.8 * np.arange(100)
    wr = wb[80] + 0.8 * np.arange(100)  # 20 pixels of overlap
    n_t = 2
    fb, fr = np.full((n_t, 100), 2.0), np.full((n_t, 100), 5.0)
    ib, ir = np.full((n_t, 100), 1.0), np.full((n_t, 100), 3.0)
    mb, mr = np.zeros((n_t, 100)), np.zeros((n_t, 100))
    mr[1, 0] = 1  # target 1: R's first pixel bad -> B alone there
    data = write_desi({"B": (wb, fb, ib, mb), "R": (wr, fr, ir, mr)}, [11, 22])
    _, (s0, s1) = read_spectra(Source(data, name="coadd-x.fits"))
    assert s0.object_id == "11" and s1.object_id == "22"
    assert s0.npix == 180
    np.testing.assert_allclose(s0.flux[80:100], (1 * 2 + 3 * 5) / 4)
    np.testing.assert_allclose(s0.ivar[80:100], 4.0)
    assert s1.flux[80] == 2.0 and s1.ivar[80] == 1.0
    assert not s0.mask.any()


def test_round_trip_onto_the_grid():
    """A spectrum cut into three overlapping cameras and merged lands where the whole one does."""
    rng = np.random.default_rng(3)
    wave = 3600 + 0.8 * np.arange(7781)
    flux = 10 + np.sin(wave / 200) + rng.normal(0, 0.1, wave.size)
    ivar = np.full(wave.size, 4.0)
    mask = np.zeros(wave.size, bool)
    mask[3000:3010] = True
    from service.spectra import make_spectrum
    whole = make_spectrum(wave, flux, ivar, mask)
    cams = {}
    for cam, (lo, hi) in {"B": (0, 2751), "R": (2700, 5026), "Z": (4900, 7781)}.items():
        sl = slice(lo, hi)
        cams[cam] = (wave[sl], flux[None, sl], ivar[None, sl] / (2.0 if cam != "B" else 1.0),
                     mask[None, sl].astype(np.uint32))
    # halved ivar in R/Z makes the overlaps' combined ivar differ; flux is the same there
    _, (merged,) = read_spectra(Source(write_desi(cams, [7])))
    np.testing.assert_array_equal(merged.mask, mask)
    a, b = preprocess(whole), preprocess(merged)
    np.testing.assert_allclose(b.x[0], a.x[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.x[1] == 0, b.x[1] == 0)
