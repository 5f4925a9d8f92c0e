"""The client's retry policy and error decoding (service/client/protocol.py), without a server.

The end-to-end promise (a real full queue, waited out) is tests/service/api/test_client.py;
these pin the corners a live service does not produce on demand: an HTTP-date Retry-After, no
Retry-After at all, the bounds, a body that is not the service's.
"""

from __future__ import annotations

import email.utils

import httpx
import pytest

from service.client import RetryPolicy, SpeculaClient, SpeculaError
from service.client.protocol import Call, Pause, Session, error_of, retry_after


def reply(status: int, headers: dict[str, str] | None = None, **kw) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, **kw)


def test_retry_after_seconds_and_http_date():
    assert retry_after({"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(1_000_010.0, usegmt=True)
    assert retry_after({"retry-after": date}, now=1_000_000.0) == pytest.approx(10.0)
    assert retry_after({"retry-after": date}, now=2_000_000.0) == 0.0  # already past
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None


def test_policy_waits_retry_after_else_backs_off_and_is_bounded():
    p = RetryPolicy(attempts=4, max_wait=5.0, backoff=0.5)
    assert p.delay(reply(429, {"retry-after": "2"}), attempt=1, waited=0.0) == 2.0
    assert p.delay(reply(503), attempt=3, waited=0.0) == 2.0  # 0.5 × 2²
    assert p.delay(reply(429, {"retry-after": "2"}), attempt=1, waited=3.5) is None  # > 5 s
    assert p.delay(reply(429), attempt=4, waited=0.0) is None  # the 4th send was the last
    for status in (200, 400, 404, 500, 504):
        assert p.delay(reply(status, {"retry-after": "1"}), attempt=1, waited=0.0) is None


def test_session_sends_again_after_a_pause_then_raises_the_last_answer():
    steps = Session(api_key="k", retry=RetryPolicy(attempts=2), deadline_ms=250).send(
        Call("GET", "/x"))
    call = next(steps)
    assert call.headers == {"X-API-Key": "k", "x-specula-timeout-ms": "250"}
    assert steps.send(reply(429, {"retry-after": "1"})) == Pause(1.0)
    assert steps.send(None) == call
    with pytest.raises(SpeculaError) as err:
        steps.send(reply(429, {"retry-after": "1"}, json={"error": "full", "code": "queue_full"}))
    assert (err.value.status, err.value.code, err.value.detail) == (429, "queue_full", "full")


def test_a_body_that_is_not_the_services_keeps_its_status():
    err = error_of(reply(502, text="<html>Bad Gateway</html>"))
    assert (err.status, err.code) == (502, "http_error") and "Bad Gateway" in err.detail


def test_transport_errors_are_not_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    http = httpx.Client(base_url="http://specula.invalid", transport=httpx.MockTransport(handler))
    with SpeculaClient("http://specula.invalid", http=http) as c, \
            pytest.raises(httpx.ConnectError):
        c.classify({"wavelength": [1.0, 2.0], "flux": [1.0, 1.0]})
    assert len(calls) == 1
