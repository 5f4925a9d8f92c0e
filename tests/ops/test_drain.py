"""SIGTERM to a real `specula serve` on loopback: within SPECULA_GRACEFUL_SHUTDOWN_S every
request is answered — those the limit cuts off with a JSON 503 ``shutting_down`` and
Retry-After, not a plain-text 500 — connections the kernel had queued are answered, not
reset, and the process exits on time even with a batch still running.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.faulty_serve import SLOW, SLOW_S
from tests.support.loadgen import oip_rows
from tests.support.raw_http import head, read_response

pytestmark = pytest.mark.e2e
FAULTY = [sys.executable, "-m", "tests.support.faulty_serve"]  # run from the repository root
LIMIT_S = 2.0
EXIT_SLACK_S = 1.0  # signal delivery, the process's own teardown, a loaded machine


def post(url: str, payload) -> httpx.Response:
    return httpx.post(url + payload.path, content=payload.body, headers=payload.headers,
                      timeout=30)


def test_requests_past_the_limit_get_503_shutting_down_and_the_exit_is_on_time(start_ops,
                                                                            ops_repo):
    """One instance held by a SLOW_S batch, three requests queued behind it, a 2 s limit:
    all four are answered 503 shutting_down, and the process does not wait for the batch."""
    svc = start_ops(ops_repo, argv=FAULTY,
                    graceful_shutdown_s=LIMIT_S, max_concurrent_batches=1, max_batch_size=1,
                    max_queue_delay_ms=0, access_log=True)
    slow = oip_rows(1, value=float(SLOW))
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(post, svc.url, slow) for _ in range(4)]
        svc.wait_for_metric("specula_queue_depth_rows", 3)  # one running, three queued
        t0 = time.monotonic()
        svc.signal(signal.SIGTERM)
        answers = [f.result() for f in pending]
    code = svc.proc.wait(30)
    exit_s = time.monotonic() - t0
    print(f"\nSIGTERM with a {SLOW_S:.0f} s batch running, limit {LIMIT_S} s: "
          f"{[a.status_code for a in answers]}; exit {code} after {exit_s:.2f} s")
    assert [a.status_code for a in answers] == [503] * 4
    assert all(a.json()["code"] == "shutting_down" for a in answers)
    assert all(a.headers["retry-after"] == "1" for a in answers)
    assert code in (0, -signal.SIGTERM)
    assert exit_s <= LIMIT_S + EXIT_SLACK_S
    assert "Traceback" not in svc.log() and "CancelledError" not in svc.log()
    assert [r["status"] for r in svc.access_log()] == [503] * 4


def test_connections_queued_at_sigterm_are_answered_not_reset(start_ops, ops_repo):
    """The service is stopped (SIGSTOP) while 16 clients connect and send a request, so the
    kernel queues their connections; SIGTERM, then SIGCONT. Each must get a whole answer —
    200 if served before the drain began, else 503 shutting_down — and none a reset."""
    svc = start_ops(ops_repo, graceful_shutdown_s=10)
    p = oip_rows(1)
    request = head("POST", p.path, p.headers, len(p.body)) + p.body
    svc.signal(signal.SIGSTOP)
    try:
        clients = [socket.create_connection(("127.0.0.1", svc.port), timeout=5)
                   for _ in range(16)]
        for c in clients:
            c.sendall(request)
    finally:
        svc.signal(signal.SIGTERM)
        svc.signal(signal.SIGCONT)
    outcomes = []
    for c in clients:
        with c:
            try:
                r = read_response(c, timeout=10)
                outcomes.append((r.status, r.json().get("code")))
            except (ConnectionError, OSError) as exc:
                outcomes.append((type(exc).__name__, None))
    print(f"\nconnections queued at SIGTERM: {outcomes}")
    assert svc.proc.wait(30) in (0, -signal.SIGTERM)
    assert all(o in ((200, None), (503, "shutting_down")) for o in outcomes), outcomes
