"""Hot reload under load, a failed reload that changes nothing, SIGHUP, and SIGTERM draining."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.http_service import ADMIN_TOKEN, MODEL
from tests.support.tiny_classifier import write_tiny_model

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def wait_until(predicate, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition never became true")
        time.sleep(0.02)


def served_version(svc) -> int:
    return svc.client.get(f"/v2/models/{MODEL}").json()["parameters"]["version"]


def test_reload_while_serving_fails_no_request(start_service, tmp_path):
    repo = tmp_path / "models"
    write_tiny_model(repo, version=1)
    svc = start_service(repo, version_policy="latest", max_queue_delay_ms=1)
    stop = threading.Event()
    answers: list[tuple[int, str]] = []

    def hammer():
        with httpx.Client(base_url=svc.url, timeout=60) as client:
            while not stop.is_set():
                r = svc.infer_rows(3, client)
                answers.append((r.status_code, r.json().get("model_version", r.text)))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(answers) >= 15)
        write_tiny_model(repo, version=2)
        r = svc.client.post("/v1/admin/reload", headers=ADMIN)
        assert r.status_code == 200 and r.json()["models"][MODEL]["versions"] == [2]
        wait_until(lambda: sum(v == "2" for _, v in answers) >= 15)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert {status for status, _ in answers} == {200}
    assert {v for _, v in answers} == {"1", "2"}
    # version 1 was retired: its info series is gone, version 2's is there
    text = svc.client.get("/metrics").text
    assert 'specula_model_info{model="spectrum_classifier",provider' in text
    assert 'version="1"}' not in text.split("specula_model_info")[1].split("#")[0]


def test_failed_reload_keeps_serving_and_sighup_reloads(start_service, tmp_path):
    repo = tmp_path / "models"
    write_tiny_model(repo, version=1)
    svc = start_service(repo, version_policy="latest")
    write_tiny_model(repo, version=2, sha256="0" * 64)  # a corrupt upload
    r = svc.client.post("/v1/admin/reload", headers=ADMIN)
    assert r.status_code == 409 and r.json()["code"] == "checksum_mismatch"
    assert served_version(svc) == 1 and svc.infer_rows(2).status_code == 200

    write_tiny_model(repo, version=2)  # fixed
    svc.signal(signal.SIGHUP)
    wait_until(lambda: served_version(svc) == 2)

    write_tiny_model(repo, version=3, preprocess_version="0-old")
    r = svc.client.post(f"/v2/repository/models/{MODEL}/load", headers=ADMIN)
    assert r.status_code == 409 and r.json()["code"] == "preprocess_mismatch"
    assert served_version(svc) == 2 and svc.infer_rows(1).json()["model_version"] == "2"


def test_sigterm_finishes_accepted_work_then_exits(start_service, api_repo):
    svc = start_service(api_repo, version_policy="latest", max_batch_size=64,
                        max_queue_delay_ms=2000)
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(svc.infer_rows, 3) for _ in range(4)]
        svc.wait_for_metric("specula_queue_depth_rows", 12)  # all four are queued
        svc.signal(signal.SIGTERM)
        answers = [f.result() for f in pending]
    assert [a.status_code for a in answers] == [200] * 4
    assert all(len(a.content) > 0 for a in answers)
    assert svc.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal on exit
    assert "drained and stopped" in svc.log()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{svc.url}/v2/health/live", timeout=2)
