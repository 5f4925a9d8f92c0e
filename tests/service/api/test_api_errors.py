"""Every bad input is a 4xx with a machine-readable code in OIP shape, never a 500."""

from __future__ import annotations

import socket

import numpy as np
import pytest

pytestmark = pytest.mark.e2e
URL = "/v1/spectra:classify"


@pytest.mark.parametrize("body, filename, status, code", [
    (b"hello, not a spectrum", "x.txt", 415, "unknown_format"),
    (b"SIMPLE  =                    T" + b" " * 50, "cut.fits", 422, "corrupt_file"),
    (b'{"wavelength": [1, 2, 3], "flux": [1, 2]}', "a.json", 422, "bad_shape"),
    (b'{"wavelength": [3, 2, 1], "flux": [1, 2, 3]}', "a.json", 422,
     "wavelength_not_increasing"),
    (b'{"wavelength": [10, 20, 30], "flux": [1, 2, 3]}', "a.json", 422, "no_grid_overlap"),
    (b"\x1f\x8b\x08\x00garbage", "x.gz", 422, "corrupt_file"),
    (b"", "empty.fits", 400, "empty_file"),
])
def test_bad_files(service, body, filename, status, code):
    r = service.client.post(URL, files={"files": (filename, body)})
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and r.json()["source"] == filename and r.json()["error"]


def test_truncated_real_fits_is_rejected(service, sdss_spec_path):
    data = sdss_spec_path.read_bytes()  # cut inside HDU1, the COADD table the reader needs
    r = service.client.post(URL, files={"files": ("cut.fits", data[:60000])})
    assert r.status_code == 422 and r.json()["code"] == "corrupt_file"


def test_when_every_file_fails_the_first_failure_is_the_status(service):
    files = [("files", ("bad.x", b"??")), ("files", ("cut.gz", b"\x1f\x8b\x08\x00garbage"))]
    r = service.client.post(URL, files=files)
    assert r.status_code == 415 and r.json()["source"] == "bad.x"
    assert r.json()["code"] == "unknown_format"


def test_request_problems(service):
    c = service.client
    r = c.post(URL, content=b"", headers={"content-type": "application/octet-stream"})
    assert (r.status_code, r.json()["code"]) == (400, "empty_file")
    r = c.post(URL, params={"model": "nope"}, content=b"x")
    assert (r.status_code, r.json()["code"]) == (404, "model_not_found")
    r = c.post(URL, params={"version": "latest-ish"}, content=b"x")
    assert (r.status_code, r.json()["code"]) == (400, "bad_request")
    r = c.post(URL, content=b"x", headers={"x-specula-timeout-ms": "soon"})
    assert (r.status_code, r.json()["code"]) == (400, "bad_request")
    r = c.get("/v2/models/spectrum_classifier/versions/one")
    assert (r.status_code, r.json()["code"]) == (400, "bad_request")
    r = c.get("/no/such/route")
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    r = c.post("/v1/admin/reload")
    assert (r.status_code, r.json()["code"]) == (401, "unauthorized")
    r = c.post("/v1/admin/reload", headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_oversized_body_gets_413_before_it_is_sent(service):
    """Declare 1 TB and send none of it: the answer must come from the headers alone."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
        s.sendall(b"POST /v1/spectra:classify HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/octet-stream\r\n"
                  b"Content-Length: 1000000000000\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):  # the service closes the connection after the 413
            reply += chunk
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413")
    assert '"code":"too_large"' in reply


def test_oversized_chunked_body_is_cut_off_with_413(service):
    def chunks():
        for _ in range(40):
            yield b"\0" * (1024 * 1024)  # 40 MB > the 32 MB limit, no Content-Length

    r = service.client.post(URL, content=chunks())
    assert r.status_code == 413 and r.json()["code"] == "too_large"


def test_mutated_real_files_never_cause_a_server_error(service, sdss_spec_path):
    data = sdss_spec_path.read_bytes()
    rng = np.random.default_rng(4)
    bodies = [data[:n] for n in (10, 2880, 5000, 20000, 150000, len(data) - 1)]
    for _ in range(10):
        b = bytearray(data)
        idx = rng.integers(0, len(b), size=int(rng.integers(1, 200)))
        b_arr = np.frombuffer(b, dtype=np.uint8).copy()
        b_arr[idx] = rng.integers(0, 256, size=idx.size, dtype=np.uint8)
        bodies.append(b_arr.tobytes())
    statuses = [service.client.post(URL, files={"files": ("m.fits", body)}).status_code
                for body in bodies]
    assert all(s == 200 or 400 <= s < 500 for s in statuses), statuses
    oip = [b"", b"[]", b'{"inputs": 5}', b'{"inputs": [{"name": 1}]}',
           b'{"inputs": [{"name": "spectrum", "shape": [-1], "datatype": "FP32", "data": []}]}',
           b'{"inputs": [{"name": "spectrum", "shape": [1, 2, 4076], "datatype": "BYTES"}]}']
    for body in oip:
        r = service.client.post("/v2/models/spectrum_classifier/infer", content=body)
        assert 400 <= r.status_code < 500 and r.json()["code"], (body, r.text)


def test_nothing_above_was_a_server_error(service):
    assert service.metric("specula_requests_total", outcome="error") == 0
    assert service.metric("specula_requests_total", outcome="bad_input") > 0
    assert '"status":500' not in service.log()
