"""POST /v1/spectra:classify with every body the service accepts, over real HTTP."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from service.spectra import Source, read_spectra
from service.spectra.readers.exposure import write_exposure

pytestmark = pytest.mark.e2e
URL = "/v1/spectra:classify"
FIELDS = {"object_id", "source", "format", "class", "class_probability", "subtype", "label",
          "probabilities", "class_probabilities", "entropy", "epistemic", "z", "z_sigma",
          "model", "version", "warnings"}


@pytest.fixture(scope="module")
def sdss_bytes(sdss_spec_path) -> bytes:
    return sdss_spec_path.read_bytes()


@pytest.fixture(scope="module")
def sdss_spectrum(sdss_spec_path):
    return read_spectra(Source.from_path(sdss_spec_path))[1][0]


@pytest.fixture(scope="module")
def reference(service, sdss_bytes) -> dict:
    r = service.client.post(URL, files={"files": ("spec.fits", sdss_bytes)})
    assert r.status_code == 200, r.text
    return r.json()


def test_one_fits_file(reference):
    assert reference["model"] == "spectrum_classifier" and reference["version"] == 2
    (res,) = reference["results"]
    assert FIELDS <= set(res)
    assert res["object_id"] == "1198-52669-0063" and res["format"] == "sdss-spec"
    assert res["class"] in {"GALAXY", "QSO", "STAR"}
    assert res["class_probability"] == pytest.approx(res["class_probabilities"][res["class"]])
    assert sum(res["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert res["z_sigma"] > 0 and res["entropy"] >= res["epistemic"] >= 0


def test_many_fits_files_in_one_request(service, sdss_bytes, reference):
    files = [("files", (f"spec{i}.fits", sdss_bytes)) for i in range(3)]
    results = service.client.post(URL, files=files).json()["results"]
    assert [r["source"] for r in results] == ["spec0.fits", "spec1.fits", "spec2.fits"]
    for r in results:
        assert r["probabilities"] == pytest.approx(reference["results"][0]["probabilities"])


@pytest.mark.parametrize("field", ["file", "files"])
def test_upload_field_file_or_files(service, sdss_bytes, reference, field):
    """README's ``curl -F file=@...`` and the schema's ``files`` (both declared) are read the
    same; the schema says so."""
    r = service.client.post(URL, files={field: ("spec.fits", sdss_bytes)})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["probabilities"] == pytest.approx(
        reference["results"][0]["probabilities"])
    body = service.client.get("/openapi.json").json()["paths"][URL]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]["schema"]
    assert {"file", "files"} <= set(form["properties"])
    assert {tuple(alt["required"]) for alt in form["anyOf"]} == {("file",), ("files",)}


def test_raw_body_and_pinned_version(service, sdss_bytes, reference):
    r = service.client.post(URL, params={"version": 1}, content=sdss_bytes,
                            headers={"content-type": "application/fits",
                                     "x-filename": "raw.fits"})
    (res,) = r.json()["results"]
    assert res["version"] == 1 and res["source"] == "raw.fits"
    assert res["probabilities"] != reference["results"][0]["probabilities"]


def test_exposure_container_larger_than_a_batch_is_split_and_reassembled(
        service, sdss_spectrum, reference):
    n = 150  # the shared service batches 64 rows: 3 batches for this one request
    spectra = [sdss_spectrum] * n
    body = write_exposure(spectra)
    batches_before = service.metric("specula_batches_total")
    r = service.client.post(URL, files={"files": ("exposure.fits", body)})
    results = r.json()["results"]
    assert len(results) == n
    assert {x["format"] for x in results} == {"specula-exposure"}
    assert [x["object_id"] for x in results] == ["1198-52669-0063"] * n
    # the container stores float32 flux: same answer as the FITS file to float32 precision
    ref = reference["results"][0]["probabilities"]
    for x in (results[0], results[63], results[64], results[-1]):
        assert x["probabilities"] == pytest.approx(ref, abs=1e-4)
    assert service.metric("specula_batches_total") - batches_before >= 3


def test_json_arrays_and_npy(service, sdss_spectrum):
    s = sdss_spectrum
    doc = {"spectra": [{"wavelength": s.wavelength.tolist(), "flux": s.flux.tolist(),
                        "ivar": s.ivar.tolist(), "object_id": f"json-{i}"} for i in range(2)]}
    r = service.client.post(URL, content=json.dumps(doc),
                            headers={"content-type": "application/json"})
    assert [x["object_id"] for x in r.json()["results"]] == ["json-0", "json-1"]
    buf = io.BytesIO()
    np.save(buf, np.stack([s.wavelength, s.flux, s.ivar]))
    r = service.client.post(URL, files={"files": ("spec.npy", buf.getvalue())})
    (res,) = r.json()["results"]
    assert res["format"] == "arrays" and res["class"] in {"GALAXY", "QSO", "STAR"}


def test_heavily_masked_spectrum_carries_a_warning(service, sdss_spectrum):
    s = sdss_spectrum
    mask = np.zeros(s.npix, dtype=bool)
    mask[: int(0.45 * s.npix)] = True
    doc = {"wavelength": s.wavelength.tolist(), "flux": s.flux.tolist(),
           "ivar": s.ivar.tolist(), "mask": mask.tolist()}
    (res,) = service.client.post(URL, json=doc).json()["results"]
    assert any("pixels masked" in w for w in res["warnings"]), res["warnings"]


def test_ndjson_stream_gives_a_line_per_spectrum_and_error_lines(service, sdss_bytes):
    files = [("files", ("a.fits", sdss_bytes)), ("files", ("junk.bin", b"not a spectrum")),
             ("files", ("b.fits", sdss_bytes))]
    r = service.client.post(URL, files=files, headers={"accept": "application/x-ndjson"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert len(lines) == 3
    errors = [x for x in lines if "error" in x]
    assert errors == [{"source": "junk.bin", "error": {
        "code": "unknown_format", "detail": "no spectrum reader identifies this input (known: "
        "specula-exposure, sdss-spplate, desi-coadd, eso-sdp, sdss-spec, sdss-spspec, arrays, "
        "specutils-tabular)",
        "source": "junk.bin"}}]
    assert sorted(x["source"] for x in lines if "error" not in x) == ["a.fits", "b.fits"]


def test_successes_are_counted_per_model_and_version(service, sdss_bytes):
    before = service.metric("specula_requests_total", version="1", outcome="success")
    service.client.post(URL, params={"version": 1}, files={"files": ("s.fits", sdss_bytes)})
    after = service.metric("specula_requests_total", version="1", outcome="success")
    assert after == before + 1


def test_dead_fibre_is_a_per_spectrum_error_not_a_failed_exposure(service, sdss_spectrum):
    s = sdss_spectrum
    dead = type(s)(s.wavelength, s.flux * 0, s.ivar * 0, np.ones(s.npix, bool),
                   {"object_id": "dead"})
    r = service.client.post(URL, files={"files": ("exp.fits", write_exposure([s, dead, s]))})
    assert r.status_code == 200
    ok1, bad, ok2 = r.json()["results"]
    assert bad["object_id"] == "dead" and bad["error"]["code"] == "empty_spectrum"
    assert "class" in ok1 and ok1["probabilities"] == ok2["probabilities"]
