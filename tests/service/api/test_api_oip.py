"""Open Inference Protocol v2 with the real tritonclient.http client: JSON and binary tensors."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.spectra import DEFAULT_GRID, Source, preprocess, read_spectra
from tests.support.http_service import ADMIN_TOKEN, MODEL, PROVIDER

pytestmark = pytest.mark.e2e
OUTPUTS = ["probs", "entropy", "epistemic", "z", "z_sigma"]


@pytest.fixture(scope="module")
def client(service):
    c = triton.InferenceServerClient(url=f"127.0.0.1:{service.port}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def batch(sdss_spec_path) -> np.ndarray:
    """The real SDSS spectrum preprocessed, plus 99 noise rows: a (100, 2, 4076) input."""
    s = read_spectra(Source.from_path(sdss_spec_path))[1][0]
    x = np.random.default_rng(0).normal(size=(100, 2, DEFAULT_GRID.npix)).astype(np.float32)
    x[0] = preprocess(s).x
    return x


def infer(client, x, binary: bool, version: str = ""):
    inp = triton.InferInput("spectrum", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [triton.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS]
    return client.infer(MODEL, [inp], model_version=version, outputs=outs,
                        request_id="req-1")


def test_server_and_model_endpoints(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "7")
    assert client.get_server_metadata()["name"] == "specula"
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"][0]["shape"] == [-1, 2, 4076]
    assert meta["parameters"]["provider"] == PROVIDER
    index = client.get_model_repository_index()
    assert {(m["name"], m["version"], m["state"]) for m in index} == {
        (MODEL, "1", "READY"), (MODEL, "2", "READY")}


def test_binary_and_json_tensors_agree_and_match_native_endpoint(client, service, batch,
                                                                 sdss_spec_path):
    b = infer(client, batch, binary=True)
    j = infer(client, batch, binary=False)
    assert b.get_response()["model_version"] == "2" and b.get_response()["id"] == "req-1"
    for name in OUTPUTS:
        assert b.as_numpy(name).shape[0] == 100  # > the 64-row batch: split and reassembled
        np.testing.assert_allclose(b.as_numpy(name), j.as_numpy(name), rtol=1e-6)
    native = service.client.post("/v1/spectra:classify",
                                 files={"files": ("s.fits", sdss_spec_path.read_bytes())})
    probs = list(native.json()["results"][0]["probabilities"].values())
    np.testing.assert_allclose(b.as_numpy("probs")[0], probs, rtol=1e-5)


def test_pinned_version_answers_with_that_version(client, batch):
    r1 = infer(client, batch[:3], binary=True, version="1")
    r2 = infer(client, batch[:3], binary=True, version="2")
    assert r1.get_response()["model_version"] == "1"
    assert not np.allclose(r1.as_numpy("probs"), r2.as_numpy("probs"))


def test_bad_tensors_are_4xx_with_codes(client, service):
    wrong_shape = np.zeros((2, 2, 100), np.float32)
    with pytest.raises(InferenceServerException, match="bad_shape|does not match"):
        infer(client, wrong_shape, binary=True)
    c = service.client
    r = c.post(f"/v2/models/{MODEL}/infer", json={"inputs": [
        {"name": "spectrum", "shape": [1, 2, 4076], "datatype": "FP64", "data": [0.0] * 8152}]})
    assert r.status_code == 400 and r.json()["code"] == "bad_dtype"
    r = c.post(f"/v2/models/{MODEL}/infer", json={"inputs": [
        {"name": "spectrum", "shape": [1, 2, 4076], "datatype": "FP32", "data": [0.0] * 5}]})
    assert r.status_code == 400 and r.json()["code"] == "bad_shape"
    r = c.post(f"/v2/models/{MODEL}/infer", json={"inputs": [
        {"name": "flux", "shape": [1, 2, 4076], "datatype": "FP32", "data": [0.0] * 8152}]})
    assert r.status_code == 400 and r.json()["code"] == "bad_tensor"
    r = c.post(f"/v2/models/{MODEL}/infer", content=b"{not json")
    assert r.status_code == 400 and r.json()["code"] == "bad_request"
    r = c.post(f"/v2/models/{MODEL}/infer", content=b'{"inputs": []}xxxx',
               headers={"Inference-Header-Content-Length": "999"})
    assert r.status_code == 400 and r.json()["code"] == "bad_request"
    header = (b'{"inputs": [{"name": "spectrum", "shape": [1, 2, 4076], "datatype": "FP32", '
              b'"parameters": {"binary_data_size": 32608}}]}')  # declares more than is sent
    r = c.post(f"/v2/models/{MODEL}/infer", content=header + b"\0" * 100,
               headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and r.json()["code"] == "bad_shape"
    r = c.post("/v2/models/nope/infer", json={"inputs": []})
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"


def test_repository_load_needs_the_admin_token(client):
    with pytest.raises(InferenceServerException, match="Bearer"):
        client.load_model(MODEL)
    client.load_model(MODEL, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert client.is_model_ready(MODEL)
