"""POST /v1/spectra:classify with multi-object files, over real HTTP: one result per object,
in file order, under its id — an SDSS spPlate (fibres, sky flagged, a dead fibre's error in
its place), a real DESI coadd (every TARGETID), ESO/4MOST SDP tables and files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from service.spectra.readers.sdss_spplate import SKY_WARNING
from tests.support.multi_object_files import FIBRES, real_plate, write_eso_sdp_rows
from tests.support.spectrum_writers import sdss_like_spectrum, write_eso_sdp

pytestmark = pytest.mark.e2e
URL = "/v1/spectra:classify"


@pytest.fixture(scope="module")
def plate(sdss_spec_path) -> bytes:
    return real_plate(sdss_spec_path)


def classify(service, name: str, data: bytes) -> list[dict]:
    r = service.client.post(URL, files={"files": (name, data)})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_spplate_gives_one_result_per_fibre(service, plate, sdss_spec_path):
    (spec,) = classify(service, "spec-1198-52669-0063.fits", sdss_spec_path.read_bytes())
    results = classify(service, "spPlate-1198-52669.fits", plate)
    assert [r["object_id"] for r in results] == [f"1198-52669-{f:04d}" for f in FIBRES]
    assert all(r["source"] == "spPlate-1198-52669.fits" for r in results)
    by_id = {r["object_id"]: r for r in results}
    real = by_id["1198-52669-0063"]
    assert real["format"] == "sdss-spplate"
    assert real["class"] == spec["class"]  # the same star, read from the plate
    assert real["probabilities"] == pytest.approx(spec["probabilities"], abs=1e-3)
    sky = by_id["1198-52669-0061"]
    assert SKY_WARNING in sky["warnings"] and "no_signal" in sky["quality_flags"]
    dead = by_id["1198-52669-0065"]
    assert dead["error"]["code"] == "empty_spectrum" and "class" not in dead
    assert sum("error" in r for r in results) == 1


def test_a_malformed_spplate_is_a_4xx_with_its_code(service, plate):
    with fits.open(io.BytesIO(plate)) as h:
        hdus = [hdu.copy() for hdu in h]
    hdus[5] = fits.BinTableHDU(hdus[5].data[:-1], name="PLUGMAP")  # 7 plug-map rows, 8 fibres
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    r = service.client.post(URL, files={"files": ("spPlate-bad.fits", buf.getvalue())})
    assert 400 <= r.status_code < 500
    assert r.json()["code"] == "bad_shape"


def _desi_coadd() -> Path:
    specutils = pytest.importorskip("specutils")
    path = (Path(specutils.__file__).parent / "io" / "default_loaders" / "tests"
            / "desi_test_data" / "coadd-sv3-dark-26065.fits")
    if not path.exists():
        pytest.skip("specutils DESI test data not installed")
    return path


def test_real_desi_coadd_gives_every_targetid(service):
    path = _desi_coadd()
    with fits.open(path) as h:
        tids = [str(t) for t in h["FIBERMAP"].data["TARGETID"]]
    results = classify(service, path.name, path.read_bytes())
    assert [r["object_id"] for r in results] == tids
    assert all(r.get("format") == "desi-coadd" or "error" in r for r in results)
    assert any("class" in r for r in results)


def test_eso_table_of_one_row_per_object_gives_each_under_its_id(service):
    spectra = [sdss_like_spectrum(seed=i) for i in range(4)]
    waves = np.stack([s.wavelength / 10 for s in spectra])
    fluxes = np.stack([s.flux for s in spectra])
    errs = np.stack([np.where(s.ivar > 0, 1 / np.sqrt(np.where(s.ivar > 0, s.ivar, 1)), 0)
                     for s in spectra])
    quals = np.stack([s.mask for s in spectra]).astype(np.int32)
    ids = [f"4MOST-{i:05d}" for i in range(4)]
    results = classify(service, "ob-1234567.fits",
                       write_eso_sdp_rows(waves, fluxes, errs, quals, ids=ids))
    assert [r["object_id"] for r in results] == ids
    assert all(r["format"] == "eso-sdp" and "class" in r for r in results)


def test_one_file_per_object_gives_one_result_per_file(service):
    """The SDP standard's multi-object delivery (one file per object) in one request."""
    files = [("files", (f"ADP.{i}.fits", write_eso_sdp(sdss_like_spectrum(seed=i))
                        .replace(b"NGC 1234", f"OBJ-{i:04d}".encode()))) for i in range(3)]
    r = service.client.post(URL, files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(x["source"], x["object_id"]) for x in results] == [
        (f"ADP.{i}.fits", f"OBJ-{i:04d}") for i in range(3)]
