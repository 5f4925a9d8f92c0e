"""A bounded queue answers 429 + Retry-After; expired work is answered 504 and never computed.

The service here waits up to 3 s to fill a batch of 16 rows and queues at most 8 rows, so a
request of 5 (or 8) rows sits in the queue long enough for the test to observe it (through the queue
depth gauge — no sleeps, no timing assertions).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture
def slow_service(start_service, api_repo):
    return start_service(api_repo, max_batch_size=16, max_queue_rows=8,
                         max_queue_delay_ms=3000, version_policy="latest")


def test_full_queue_is_429_with_retry_after_and_too_big_is_413(slow_service):
    svc = slow_service
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(svc.infer_rows, 5)
        svc.wait_for_metric("specula_queue_depth_rows", 5)
        full = svc.infer_rows(5)
        assert full.status_code == 429
        assert full.headers["retry-after"] == "1" and full.json()["code"] == "queue_full"
        never = svc.infer_rows(9)
        assert never.status_code == 413 and never.json()["code"] == "too_large"
        assert first.result().status_code == 200  # the queued request was not harmed
    assert svc.metric("specula_requests_total", outcome="rejected") == 2
    assert svc.metric("specula_inference_items_total") == 5


def test_expired_request_gets_504_and_never_reaches_the_model(slow_service):
    svc = slow_service
    late = svc.infer_rows(5, **{"x-specula-timeout-ms": "100"})
    assert late.status_code == 504 and late.json()["code"] == "deadline_exceeded"
    after = svc.infer_rows(1)  # flushed by the queue delay, after the expired rows were dropped
    assert after.status_code == 200
    assert svc.metric("specula_inference_items_total") == 1
    assert svc.metric("specula_requests_total", outcome="timeout") == 1


def test_full_queue_refuses_files_before_decoding_them(slow_service, sdss_spec_path):
    svc = slow_service
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(svc.infer_rows, 8)  # a full queue: 8 of 8 rows, waiting 3 s
        svc.wait_for_metric("specula_queue_depth_rows", 8)
        r = svc.client.post("/v1/spectra:classify",
                            files={"files": ("s.fits", sdss_spec_path.read_bytes())})
        assert r.status_code == 429 and r.json()["code"] == "queue_full"
        assert first.result().status_code == 200
    assert svc.metric("specula_preprocess_duration_seconds_count") == 0


def test_uploads_in_flight_are_bounded_in_bytes(start_service, api_repo):
    """One 5-row request (163 kB) is queued; a second upload would pass the 200 kB budget."""
    svc = start_service(api_repo, max_batch_size=16, max_queue_delay_ms=3000,
                        max_inflight_bytes=200_000, version_policy="latest")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(svc.infer_rows, 5)
        svc.wait_for_metric("specula_queue_depth_rows", 5)
        r = svc.infer_rows(2)
        assert r.status_code == 503 and r.json()["code"] == "overloaded"
        assert r.headers["retry-after"] == "1"
        assert first.result().status_code == 200
    assert svc.infer_rows(2).status_code == 200  # the budget is released with the response
