"""JSON bodies are reserved in the in-flight byte budget at their decoded size, before decoding
(service/api/jsonbudget.py): over real HTTP, and the factor itself against tracemalloc."""

from __future__ import annotations

import json
import socket
import time
import tracemalloc

import numpy as np
import pytest

from service.api.jsonbudget import JSON_DECODE_FACTOR
from service.api.oip import decode_infer_request
from service.io.source import Source
from service.spectra.readers.arrays import read_arrays
from tests.support.http_service import Service

BUDGET = 16 * 1024 * 1024
MODEL = "spectrum_classifier"


def spectrum_json(n: int) -> bytes:
    """A JSON spectrum of ``n`` pixels over the model grid (~19 bytes a number)."""
    rng = np.random.default_rng(0)
    return json.dumps({"wavelength": np.linspace(3600, 9200, n).tolist(),
                       "flux": rng.normal(1, 0.1, n).tolist()}).encode()


def oip_json(values: int) -> bytes:
    data = ",".join(["1.25"] * values)
    return (f'{{"inputs":[{{"name":"spectrum","shape":[{values // 8152},2,4076],'
            f'"datatype":"FP32","data":[{data}]}}]}}').encode()


@pytest.fixture(scope="module")
def small_budget(api_repo, tmp_path_factory):

    svc = Service(api_repo, tmp_path_factory.mktemp("json-budget") / "service.log",
                  max_inflight_bytes=BUDGET, version_policy="latest")
    yield svc
    svc.stop()


def test_json_that_decodes_past_the_budget_is_refused_unparsed(small_budget):
    """~1 MB of JSON decodes to tens of MB: 413 under a 16 MB budget, on the native route and
    on OIP; before, both were parsed (a 130 MB body took ~1 GB) and answered 200."""
    body = spectrum_json(55_000)
    assert JSON_DECODE_FACTOR * len(body) > BUDGET > len(body)
    r = small_budget.client.post("/v1/spectra:classify", content=body,
                                 headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "too_large" and "SPECULA_MAX_INFLIGHT_BYTES" in r.json()["error"]
    files = {"files": ("s.json", body, "application/json")}
    r = small_budget.client.post("/v1/spectra:classify", files=files)
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    r = small_budget.client.post(f"/v2/models/{MODEL}/infer", content=oip_json(8152 * 30))
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    # a JSON spectrum of ordinary size still goes through, and so does the same as OIP JSON
    r = small_budget.client.post("/v1/spectra:classify", content=spectrum_json(4000))
    assert r.status_code == 200, r.text
    r = small_budget.client.post(f"/v2/models/{MODEL}/infer", content=oip_json(8152))
    assert r.status_code == 200, r.text


def test_json_waits_while_other_uploads_hold_the_budget(small_budget):
    """A 10 MB upload in flight (declared, half sent) leaves 6 MB: a 230 kB JSON body (9 MB
    decoded) gets 503 + Retry-After, and goes through once the upload is gone."""
    body = spectrum_json(6_000)
    assert JSON_DECODE_FACTOR * len(body) < BUDGET < JSON_DECODE_FACTOR * len(body) + 10_000_000
    with socket.create_connection(("127.0.0.1", small_budget.port), timeout=10) as s:
        s.sendall(b"POST /v1/spectra:classify HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000"
                  b"\r\nContent-Type: application/octet-stream\r\n\r\n" + b"\0" * 65536)
        time.sleep(0.3)  # the server has admitted it and is waiting for the rest
        r = small_budget.client.post("/v1/spectra:classify", content=body)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "overloaded" and r.headers["retry-after"] == "1"
    deadline = time.monotonic() + 10
    while (r := small_budget.client.post("/v1/spectra:classify", content=body)
           ).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)  # the hung-up upload's bytes are released when the server notices
    assert r.status_code == 200, r.text


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    except Exception:  # noqa: BLE001, S110 — refused documents count too: decoding happened
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("kind", ["numbers", "floats", "ints", "digits", "empty_objects",
                                  "empty_lists", "short_strings"])
def test_the_decode_factor_bounds_what_decoding_takes(kind):
    """Whatever a JSON document holds, parsing and reading it peaks below the factor."""
    n = 100_000
    item = {"floats": "1.5", "ints": "257", "digits": "1", "empty_objects": "{}",
            "empty_lists": "[]", "short_strings": '"ab"'}.get(kind)
    if item is None:
        body = spectrum_json(n)
    else:
        wave = ",".join(str(3600 + i) for i in range(n))
        body = f'{{"wavelength":[{wave}],"flux":[{",".join([item] * n)}]}}'.encode()
    peak = peak_bytes(lambda: read_arrays(Source(body, name="x", max_bytes=1 << 30)))
    assert peak < JSON_DECODE_FACTOR * len(body), (kind, peak / len(body))
    if item is not None:
        oip = (f'{{"inputs":[{{"name":"s","shape":[{n}],"datatype":"FP64",'
               f'"data":[{",".join([item] * n)}]}}]}}').encode()
        peak = peak_bytes(lambda: decode_infer_request(oip, None))
        assert peak < JSON_DECODE_FACTOR * len(oip), (kind, "oip", peak / len(oip))
