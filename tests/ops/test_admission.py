"""Overload and deadlines over real HTTP on loopback: a full queue refuses from the headers,
before the body is read; a deadline is answered 504 when it passes, wherever the request
waits, and an expired request gives its queue rows back at once.

The queue is held full without any timing luck: rows wait for a batch to fill for 5 s
(SPECULA_MAX_QUEUE_DELAY_MS) in a queue of 2 rows (SPECULA_MAX_QUEUE_ROWS).
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.loadgen import oip_rows
from tests.support.raw_http import head, read_response

pytestmark = pytest.mark.e2e
DEADLINE_HEADER = "x-specula-timeout-ms"
HELD_QUEUE = {"max_batch_size": 8, "max_queue_delay_ms": 5000}
OVERSHOOT_S = 0.25  # generous: a loaded 2-CPU machine, the answer measured by the client


@pytest.fixture
def full_queue(start_ops, ops_repo):
    """A service whose 2-row queue is full (two 1-row requests waiting for their batch)."""
    svc = start_ops(ops_repo, max_queue_rows=2, **HELD_QUEUE)
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(svc.infer_rows, 1) for _ in range(2)]
        svc.wait_for_metric("specula_queue_depth_rows", 2)
        yield svc
        assert [f.result().status_code for f in held] == [200, 200]


def refused_from_headers(svc, path: str, headers: dict[str, str], declared: int):
    """Send only the headers of a ``declared``-byte request: the answer must come without
    the body, which is then sent anyway and the connection reused."""
    with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as s:
        s.sendall(head("POST", path, headers, declared))
        r = read_response(s, timeout=3)  # socket.timeout: the server waited for the body
        s.sendall(b"\0" * declared)  # discarded by the server: the connection stays usable
        s.sendall(head("GET", "/v2/health/live", {}, 0))
        after = read_response(s, timeout=5)
    return r, after


def test_full_queue_refuses_oip_infer_before_the_body_is_read(full_queue):
    svc = full_queue
    rejected_before = svc.metric("specula_requests_total", outcome="rejected")
    p = oip_rows(1)
    r, after = refused_from_headers(svc, p.path, p.headers, len(p.body))
    print(f"\nfull queue, OIP headers only: {r.status} {r.json()}")
    assert r.status == 429 and r.json()["code"] == "queue_full"
    assert r.headers["retry-after"] == "1"
    assert after.status == 200
    assert svc.metric("specula_requests_total", outcome="rejected") == rejected_before + 1


def test_full_queue_refuses_classify_before_the_body_is_read(full_queue):
    svc = full_queue
    r, after = refused_from_headers(
        svc, "/v1/spectra:classify", {"Content-Type": "multipart/form-data; boundary=b"},
        200_000)
    print(f"\nfull queue, classify headers only: {r.status} {r.json()}")
    assert r.status == 429 and r.json()["code"] == "queue_full"
    assert "retry-after" in r.headers
    assert after.status == 200


def test_deadline_passes_while_the_body_is_still_coming(ops_service):
    """Half the body sent, then nothing: the 504 comes at the 1 ms deadline, not never."""
    p = oip_rows(1)
    with socket.create_connection(("127.0.0.1", ops_service.port), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(head("POST", p.path, {**p.headers, DEADLINE_HEADER: "1"}, len(p.body))
                  + p.body[:len(p.body) // 2])
        r = read_response(s, timeout=3)
        elapsed = time.monotonic() - t0
    print(f"\n1 ms deadline, body half sent: {r.status} after {elapsed * 1000:.1f} ms")
    assert r.status == 504 and r.json()["code"] == "deadline_exceeded"
    assert elapsed <= 0.001 + OVERSHOOT_S


def test_expired_request_leaves_the_queue_at_its_deadline(start_ops, ops_repo):
    """Queued behind a 5 s batch delay: the 504 comes at the 50 ms deadline, and its row
    leaves the queue then (the depth gauge is back to 0), not when the batch would form."""
    svc = start_ops(ops_repo, max_queue_rows=4, **HELD_QUEUE)
    timeouts_before = svc.metric("specula_requests_total", outcome="timeout")
    t0 = time.monotonic()
    r = svc.infer_rows(1, **{DEADLINE_HEADER: "50"})
    elapsed = time.monotonic() - t0
    depth = svc.metric("specula_queue_depth_rows")
    print(f"\n50 ms deadline in a held queue: {r.status_code} after {elapsed * 1000:.1f} ms; "
          f"queue depth then {depth}")
    assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded"
    assert elapsed <= 0.05 + OVERSHOOT_S
    assert depth == 0
    assert svc.metric("specula_requests_total", outcome="timeout") == timeouts_before + 1
    assert svc.infer_rows(1, **{DEADLINE_HEADER: "bad"}).status_code == 400  # no timer set
