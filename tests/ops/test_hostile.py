"""Hostile input over real HTTP: every file of tests/ops/hostile/ (regenerate with its
make_hostile.py), oversized bodies, thousands of multipart parts, path-like file names, hostile
OIP requests, and a hypothesis fuzz of the HTTP decoders. Each must be a 4xx, in bounded time
(client timeout) and bounded memory (the service's peak RSS), never a 5xx.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import make_hostile
from tests.support.http_service import ADMIN_TOKEN

pytestmark = pytest.mark.e2e
HOSTILE = Path(__file__).resolve().parent / "hostile"
URL = "/v1/spectra:classify"
OIP = "/v2/models/spectrum_classifier/infer"
CORPUS = sorted(p for p in HOSTILE.iterdir() if p.suffix != ".py" and p.is_file())
FOUR_XX = {400, 404, 405, 413, 415, 422}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def check(r: httpx.Response, what: str) -> dict:
    assert r.status_code in FOUR_XX, f"{what}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert body.get("code") and body.get("error"), f"{what}: no error code: {body}"
    return body


@pytest.fixture(scope="module")
def hostile_report(ops_service):
    """Collects (name, status, code, seconds) and prints the table at the end."""
    rows: list[tuple[str, int, str, float]] = []
    rss0 = peak_rss_mb(ops_service.proc.pid)
    RSS["start"] = rss0
    yield rows
    rss1 = peak_rss_mb(ops_service.proc.pid)
    print(f"\nhostile inputs: {len(rows)}; service peak RSS {rss0:.0f} -> {rss1:.0f} MB")
    for name, status, code, secs in rows:
        print(f"  {name:<34} {status} {code:<22} {secs * 1000:8.1f} ms")


def test_corpus_is_current():
    """The committed files are what make_hostile.py generates (so the script is the truth);
    the gzip bombs, slow to regenerate, are checked by what they inflate to."""
    import zlib

    generated = make_hostile.corpus(bombs=False)
    assert sorted([*generated, *make_hostile.BOMBS]) == [p.name for p in CORPUS]
    for name, data in generated.items():
        assert (HOSTILE / name).read_bytes() == data, name
    for name in make_hostile.BOMBS:
        data = (HOSTILE / name).read_bytes()
        while data[:2] == b"\x1f\x8b" and len(data) < 2**20:  # peel the gzip layers
            d, chunks = zlib.decompressobj(16 + zlib.MAX_WBITS), []
            while data:
                chunks.append(d.decompress(data, 2**24))
                data = d.unconsumed_tail
            data = b"".join(chunks)
        assert len(data) > 64 * 2**20, name  # over the test service's per-file limit


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
@pytest.mark.parametrize("how", ["multipart", "raw"])
def test_hostile_file_is_a_4xx(ops_service, hostile_report, path, how):
    data = path.read_bytes()
    t0 = time.perf_counter()
    if how == "multipart":
        r = ops_service.client.post(URL, files={"files": (path.name, data)}, timeout=30)
    else:
        r = ops_service.client.post(URL, content=data, headers={"X-Filename": path.name},
                                    timeout=30)
    body = check(r, path.name)
    hostile_report.append((f"{path.name} ({how})", r.status_code, body["code"],
                           time.perf_counter() - t0))


def test_oversized_body_and_too_many_parts(ops_service, hostile_report):
    svc = ops_service
    t0 = time.perf_counter()
    r = svc.client.post(URL, content=b"\0" * (5 * 2**20), headers={"X-Filename": "big.fits"})
    assert check(r, "5 MB body")["code"] == "too_large" and r.status_code == 413
    hostile_report.append(("5 MB body (limit 4 MB)", r.status_code, "too_large",
                           time.perf_counter() - t0))
    # 5000 tiny parts (limit 50 files per request)
    boundary = "hostileboundary"
    parts = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f"; '
                     f'filename="{i}.fits"\r\n\r\nx\r\n'.encode() for i in range(5000))
    t0 = time.perf_counter()
    r = svc.client.post(URL, content=parts + f"--{boundary}--\r\n".encode(),
                        headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    body = check(r, "5000 parts")
    hostile_report.append(("5000 multipart parts", r.status_code, body["code"],
                           time.perf_counter() - t0))
    # 5000 plain fields, no files
    fields = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="k{i}"\r\n\r\n'
                      f'v\r\n'.encode() for i in range(5000))
    r = svc.client.post(URL, content=fields + f"--{boundary}--\r\n".encode(),
                        headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    body = check(r, "5000 fields")
    hostile_report.append(("5000 multipart fields", r.status_code, body["code"], 0.0))
    # a boundary that never ends
    r = svc.client.post(URL, content=b"--b\r\n" + b"A" * 100_000,
                        headers={"content-type": "multipart/form-data; boundary=b"})
    body = check(r, "unterminated multipart")
    hostile_report.append(("unterminated multipart", r.status_code, body["code"], 0.0))


PATH_NAMES = ["../../../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini",
              "models/spectrum_classifier/1/model.onnx", "../models/README.md",
              "spec\x00.fits", "~root/.ssh/id_rsa", "file:///etc/passwd", "%2e%2e%2fetc%2fpasswd"]


@pytest.mark.parametrize("name", PATH_NAMES)
def test_path_like_file_names_are_labels_only(ops_service, ops_repo, name):
    """A file name is only echoed as a label; no file is read or written because of it."""
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in ops_repo.rglob("*") if p.is_file()}
    payload = b"not a spectrum at all"
    r1 = ops_service.client.post(URL, files={"files": (name, payload)})
    safe_header = name.replace("\x00", "")
    r2 = ops_service.client.post(URL, content=payload, headers={"X-Filename": safe_header})
    for r in (r1, r2):
        body = check(r, name)
        assert body["code"] == "unknown_format"
        assert "root:" not in r.text and "[fonts]" not in r.text  # no file content leaked
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in ops_repo.rglob("*") if p.is_file()}
    assert after == before


def test_repository_load_refuses_path_like_model_names(ops_service):
    """The only route whose parameter reaches a path (admin reload): names not in the
    repository are refused before any path is built."""
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    for name in ["..", "...", "%2e%2e", "nope", "spectrum_classifier%2f..%2f.."]:
        r = ops_service.client.post(f"/v2/repository/models/{name}/load", headers=admin)
        assert r.status_code == 404, (name, r.status_code, r.text)
    # raw request line with '..' as the name (httpx would normalise it away)
    import socket
    with socket.create_connection(("127.0.0.1", ops_service.port), timeout=10) as s:
        s.sendall(f"POST /v2/repository/models/../load HTTP/1.1\r\nHost: x\r\nauthorization: "
                  f"Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                  .encode())
        answer = s.recv(4096).split(b"\r\n", 1)[0]
    assert answer.split()[1] in (b"404", b"400"), answer


def hostile_oip() -> list[tuple[str, bytes, dict]]:
    hdr = lambda d: json.dumps(d).encode()
    inp = lambda **kw: hdr({"inputs": [{"name": "spectrum", **kw}]})
    return [
        ("shape 2^40 rows, no data", inp(shape=[2**40, 2, 4076], datatype="FP32", data=[]), {}),
        ("negative shape", inp(shape=[-1, 2, 4076], datatype="FP32", data=[1.0]), {}),
        ("shape product overflows int64", inp(shape=[2**62, 2**62, 4076], datatype="FP32",
                                              data=[]), {}),
        ("wrong dtype BYTES", inp(shape=[1, 2, 4076], datatype="BYTES", data=["x"] * 8152), {}),
        ("wrong dtype INT8 binary", inp(shape=[1, 2, 4076], datatype="INT8",
                                        parameters={"binary_data_size": 8152}), {}),
        ("NaN/inf data", hdr({"inputs": [{"name": "spectrum", "shape": [1, 2, 4],
                                          "datatype": "FP32",
                                          "data": [1e999, -1e999, 0, 0, 0, 0, 0, 0]}]}), {}),
        ("nested 10k lists", b'{"inputs": ' + b"[" * 10000 + b"]" * 10000 + b"}", {}),
        ("binary size lies", inp(shape=[1, 2, 4076], datatype="FP32",
                                 parameters={"binary_data_size": 2**40}),
         {"Inference-Header-Content-Length": "x"}),
        ("header length beyond body", inp(shape=[1, 2, 4076], datatype="FP32"),
         {"Inference-Header-Content-Length": str(2**40)}),
        ("header length negative", inp(shape=[1, 2, 4076], datatype="FP32"),
         {"Inference-Header-Content-Length": "-5"}),
        ("many inputs", hdr({"inputs": [{"name": f"i{i}", "shape": [1], "datatype": "FP32",
                                         "data": [0]} for i in range(20000)]}), {}),
    ]


@pytest.mark.parametrize("case", hostile_oip(), ids=lambda c: c[0])
def test_hostile_oip_request_is_a_4xx(ops_service, hostile_report, case):
    what, body, headers = case
    if headers.get("Inference-Header-Content-Length") == "x":
        headers = {"Inference-Header-Content-Length": str(len(body))}
    t0 = time.perf_counter()
    r = ops_service.client.post(OIP, content=body, headers=headers, timeout=30)
    code = check(r, what)["code"]
    hostile_report.append((f"OIP: {what}", r.status_code, code, time.perf_counter() - t0))


# ---- fuzz -----------------------------------------------------------------------------------
FUZZ_CASES = {"native": 0, "oip": 0}
RSS: dict[str, float] = {}
seeds = [p.read_bytes()[:4096] for p in CORPUS if p.stat().st_size < 50_000]


@st.composite
def mutated(draw) -> bytes:
    base = draw(st.sampled_from(seeds + [b'{"spectra": [{"wavelength": [1,2,3], "flux": [1,2,3]}]}',
                                         b"\x93NUMPY\x01\x00v\x00",
                                         b"SIMPLE  =                    T"]))
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 8))):
        if data and draw(st.booleans()):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(max_size=16))
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["name", "shape", "datatype", "data", "parameters",
                                       "binary_data_size", "inputs", "outputs", "id"]),
                      children, max_size=4), max_leaves=20)


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(body=st.one_of(mutated(), st.binary(max_size=2048)),
       name=st.sampled_from(["x.fits", "x.fits.gz", "x.json", "x.npy", "x", "../x"]))
def test_fuzz_native_decoders_never_5xx(ops_service, body, name):
    FUZZ_CASES["native"] += 1
    r = ops_service.client.post(URL, content=body, headers={"X-Filename": name}, timeout=30)
    assert r.status_code < 500, (r.status_code, r.text[:300], body[:100])


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(doc=st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries({
    "name": st.sampled_from(["spectrum", "x"]),
    "shape": st.lists(st.integers(-2, 2**33), max_size=4),
    "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "FP16", "??"]),
    "data": json_values}), max_size=3)}) | json_values,
    tail=st.binary(max_size=64), binary=st.booleans())
def test_fuzz_oip_decoder_never_5xx(ops_service, doc, tail, binary):
    FUZZ_CASES["oip"] += 1
    head = json.dumps(doc).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))} if binary else {}
    r = ops_service.client.post(OIP, content=head + (tail if binary else b""), headers=headers,
                                timeout=30)
    assert r.status_code < 500, (r.status_code, r.text[:300], head[:200])


def test_fuzz_case_counts_and_service_still_healthy(ops_service):
    """Runs after the fuzz targets (file order): reports how many cases ran."""
    print(f"\nfuzz cases run: native decoders {FUZZ_CASES['native']}, "
          f"OIP decoder {FUZZ_CASES['oip']}")
    assert ops_service.client.get("/v2/health/ready").status_code == 200
    assert ops_service.metric("specula_requests_total", outcome="error") == 0
    # bounded memory: the whole corpus + fuzz raised the service's peak RSS by less than
    # 4 x the per-file limit (64 MB decoded) — a bomb or a huge declared shape would not
    peak = peak_rss_mb(ops_service.proc.pid)
    print(f"service peak RSS {RSS.get('start', float('nan')):.0f} -> {peak:.0f} MB")
    assert peak - RSS.get("start", peak) < 4 * 64
    assert "Traceback" not in ops_service.log_path.read_text(errors="replace")
