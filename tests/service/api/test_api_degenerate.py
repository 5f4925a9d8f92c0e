"""Degenerate spectra over real HTTP: refused (422 ``insufficient_coverage``) when they give
the model too little to classify, warned about when they are classified but suspect
(service/spectra/preprocess.py, service/spectra/readers/sdss_spec.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from service.spectra.preprocess import MIN_COVERAGE, MIN_GOOD_PIXELS

pytestmark = pytest.mark.e2e
URL = "/v1/spectra:classify"


def classify(service, doc: dict):
    return service.client.post(URL, json=doc)


@pytest.mark.parametrize("flux", [[1.0, 2.0, 3.0], [float("nan"), float("nan"), 1.0]],
                         ids=["three_pixels", "one_good_pixel"])
def test_a_spectrum_of_a_few_pixels_is_refused(service, flux):
    """Three pixels spread over 3,000 Å used to come back QSO at P = 0.97, and
    ``[NaN, NaN, 1]`` as "82 % masked": one value resampled onto ~700 grid pixels."""
    r = service.client.post(URL, content=f'{{"wavelength": [4000, 5000, 6000], "flux": '
                            f'[{", ".join(map(str, flux)).replace("nan", "NaN")}]}}')
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "insufficient_coverage"
    assert f"at least {MIN_GOOD_PIXELS}" in r.json()["error"]


def test_a_narrow_spectrum_is_refused(service):
    """500 well-sampled pixels over 8,450–8,720 Å (Gaia RVS-like): 4 % of the grid."""
    wave = np.linspace(8450.0, 8720.0, 500)
    r = classify(service, {"wavelength": wave.tolist(), "flux": np.ones(500).tolist()})
    assert r.status_code == 422 and r.json()["code"] == "insufficient_coverage", r.text
    assert f"at least {MIN_COVERAGE:.0%}" in r.json()["error"]


def test_good_pixels_are_never_more_than_the_input_has(service):
    """400 coarse pixels over the whole grid are classified, but the masked fraction counts
    the ~3,700 grid pixels that have no value of their own (before: 0 % masked)."""
    wave = np.geomspace(3600.0, 9200.0, 400)
    r = classify(service, {"wavelength": wave.tolist(), "flux": np.ones(400).tolist()})
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert any(w.endswith("of grid pixels masked") and w.startswith("9")
               for w in res["warnings"]), res["warnings"]


def sdss_spec_file(n: int = 3000) -> tuple[bytes, int]:
    """A pipeline spec file (COADD with and_mask, SPECOBJ, an exposure HDU) and the byte
    offset where its COADD HDU ends."""
    loglam = 3.5800 + 1e-4 * np.arange(n)
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=np.ones(n, np.float32)),
        fits.Column("loglam", "E", array=loglam.astype(np.float32)),
        fits.Column("ivar", "E", array=np.ones(n, np.float32)),
        fits.Column("and_mask", "J", array=np.zeros(n, np.int32))], name="COADD")
    specobj = fits.BinTableHDU.from_columns(
        [fits.Column("CLASS", "6A", array=np.array(["GALAXY"]))], name="SPECOBJ")
    exposure = fits.BinTableHDU.from_columns(
        [fits.Column("flux", "E", array=np.ones(n, np.float32))], name="B1-00012345")
    primary = fits.PrimaryHDU()
    primary.header["PLATEID"], primary.header["MJD"], primary.header["FIBERID"] = 1, 50000, 1
    buf = io.BytesIO()
    fits.HDUList([primary, coadd, specobj, exposure]).writeto(buf)
    data = buf.getvalue()
    with fits.open(io.BytesIO(data)) as hdul:
        return data, hdul[2].fileinfo()["hdrLoc"]  # SPECOBJ's header starts where COADD ends


def truncation_warnings(r) -> list[str]:
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    return [w for w in res["warnings"] if "truncated" in w]


def test_a_file_cut_after_its_coadd_hdu_carries_a_warning(service):
    data, coadd_end = sdss_spec_file()
    whole = service.client.post(URL, files={"files": ("spec-0001-50000-0001.fits", data)})
    assert truncation_warnings(whole) == []
    cut = service.client.post(URL, files={"files": ("spec-0001-50000-0001.fits",
                                                    data[:coadd_end])})
    assert truncation_warnings(cut), cut.json()
    # cut inside the exposure HDU, off a block boundary: the length gives it away
    mid = service.client.post(URL, files={"files": ("spec.fits", data[:-1000])})
    assert truncation_warnings(mid), mid.json()
