"""The hot routes (service/api/hotpath.py) answer exactly as FastAPI's routes do.

Two services on the same repository, one with SPECULA_HOT_ROUTES=false, get the same requests
— good and bad, OIP and native — and must give the same status, error code and body.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from service.spectra import DEFAULT_GRID
from tests.support.http_service import MODEL, Service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pair(api_repo, tmp_path_factory):
    logs = tmp_path_factory.mktemp("hot-logs")
    hot = Service(api_repo, logs / "hot.log", max_batch_size=64)
    plain = Service(api_repo, logs / "plain.log", max_batch_size=64, hot_routes="false")
    yield hot, plain
    hot.stop()
    plain.stop()


def oip_json(x: np.ndarray) -> bytes:
    return orjson.dumps({"id": "r1", "inputs": [{"name": "spectrum", "shape": list(x.shape),
                                                 "datatype": "FP32", "data": x.ravel().tolist()}]})


def oip_binary(x: np.ndarray) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{"name": "spectrum", "shape": list(x.shape),
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + x.tobytes(), {"inference-header-content-length": str(len(header))}


def requests(sdss: bytes) -> list[tuple[str, str, dict]]:
    x = np.random.default_rng(1).normal(size=(3, 2, DEFAULT_GRID.npix)).astype(np.float32)
    body, headers = oip_binary(x)
    return [
        ("POST", f"/v2/models/{MODEL}/infer", {"content": oip_json(x)}),
        ("POST", f"/v2/models/{MODEL}/versions/1/infer", {"content": body, "headers": headers}),
        ("POST", f"/v2/models/{MODEL}/versions/one/infer", {"content": oip_json(x)}),
        ("POST", f"/v2/models/{MODEL}/versions/9/infer", {"content": oip_json(x)}),
        ("POST", "/v2/models/no_such_model/infer", {"content": oip_json(x)}),
        ("POST", f"/v2/models/{MODEL}/infer", {"content": b"{not json"}),
        ("POST", f"/v2/models/{MODEL}/infer", {"content": oip_json(x[:, :1])}),
        ("GET", f"/v2/models/{MODEL}/infer", {}),
        ("POST", "/v1/spectra:classify", {"content": sdss, "headers": {"x-filename": "a.fits"}}),
        ("POST", "/v1/spectra:classify?version=1&format=sdss-spec",
         {"files": {"files": ("a.fits", sdss)}}),
        ("POST", "/v1/spectra:classify?stream=true", {"files": {"files": ("a.fits", sdss)}}),
        ("POST", "/v1/spectra:classify?version=latest", {"content": sdss}),
        ("POST", "/v1/spectra:classify?model=nope", {"content": sdss}),
        ("POST", "/v1/spectra:classify", {"content": b"SIMPLE  = garbage"}),
        ("POST", "/v1/spectra:classify", {"content": b""}),
        # one bad file among good ones: 200, its error in place; every file bad: the 4xx
        ("POST", "/v1/spectra:classify", {"files": [("files", ("a.fits", sdss)),
                                                     ("files", ("junk.bin", b"junk"))]}),
        ("POST", "/v1/spectra:classify", {"files": [("files", ("junk.bin", b"junk")),
                                                     ("files", ("empty.fits", b""))]}),
    ]


def test_hot_and_fastapi_routes_answer_alike(pair, sdss_spec_path):
    hot, plain = pair
    for method, url, kw in requests(sdss_spec_path.read_bytes()):
        a = hot.client.request(method, url, **kw)
        b = plain.client.request(method, url, **kw)
        where = f"{method} {url}: hot {a.status_code} {a.text[:200]!r}, " \
                f"FastAPI {b.status_code} {b.text[:200]!r}"
        assert a.status_code == b.status_code, where
        assert a.headers.get("content-type") == b.headers.get("content-type"), where
        assert a.content == b.content, where


def test_hot_routes_are_metered_like_fastapi_routes(pair, sdss_spec_path):
    for svc in pair:
        svc.client.post("/v1/spectra:classify?version=2", content=sdss_spec_path.read_bytes())
    for svc in pair:
        assert svc.metric("specula_requests_total", version="2", outcome="success") >= 1
        assert svc.metric("specula_inference_items_total", version="2") >= 1
