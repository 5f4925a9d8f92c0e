"""`specula serve --workers N`: several processes on one port behave as one service.

One /metrics with every worker's totals, connections spread over the workers, SIGHUP and the
admin reload reaching every worker (and a failed reload leaving every worker serving),
SIGTERM draining them all, and a killed worker replaced.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.http_service import ADMIN_TOKEN, MODEL, REPO_ROOT, oip_zeros
from tests.support.service_workers import children, fresh, served, start_workers, wait_for
from tests.support.tiny_classifier import write_tiny_model

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def infer(svc, rows: int) -> httpx.Response:
    with httpx.Client(base_url=svc.url, timeout=60) as client:
        return svc.infer_rows(rows, client)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "models"
    write_tiny_model(root, version=1)
    return root


def test_one_port_and_one_metrics_endpoint_for_every_worker(start_service, repo):
    svc = start_workers(start_service, repo)
    assert {frozenset(v) for v in served(svc).values()} == {frozenset({1})}
    for _ in range(20):
        assert infer(svc, 3).status_code == 200
    # whichever worker answers /metrics, it reports every worker's requests
    counts = set()
    for _ in range(8):
        text = fresh(svc, "GET", "/metrics").text
        m = re.search(r'^specula_requests_total\{model="spectrum_classifier",'
                      r'outcome="success",version="1"\} (\S+)$', text, re.MULTILINE)
        counts.add(float(m.group(1)))
        items = re.search(r'^specula_inference_items_total\{model="spectrum_classifier",'
                          r'version="1"\} (\S+)$', text, re.MULTILINE)
        assert float(items.group(1)) == 60
    assert counts == {20.0}


def listening_sockets(port: int) -> int:
    """Listening TCP sockets on ``port`` (state 0A in /proc/net/tcp and tcp6)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_connections_opened_together_spread_over_the_workers(start_service, repo):
    """32 clients connecting at once, as a pipeline's fibre readers would: each worker gets
    a share, because each worker listens on a socket of its own (SO_REUSEPORT). On one
    socket shared by the workers, the first to wake can accept a whole burst: in the bench
    all 32 clients once landed on one of two workers."""
    svc = start_workers(start_service, repo)
    assert listening_sockets(svc.port) == 2  # uvicorn's shared socket would be 1
    workers = sorted(children(svc.proc.pid))
    before = {pid: cpu_seconds(pid) for pid in workers}
    content, headers = oip_zeros(8)

    async def client() -> list[int]:
        async with httpx.AsyncClient(base_url=svc.url, timeout=60) as c:
            return [(await c.post(f"/v2/models/{MODEL}/infer", content=content,
                                  headers=headers)).status_code for _ in range(10)]

    async def burst() -> list[int]:
        return [s for batch in await asyncio.gather(*(client() for _ in range(32)))
                for s in batch]

    assert asyncio.run(burst()) == [200] * 320
    used = {pid: cpu_seconds(pid) - before[pid] for pid in workers}
    print("CPU seconds per worker:", used)
    assert min(used.values()) > 0.15 * sum(used.values()), used


def test_a_second_service_on_the_same_port_is_refused(start_service, repo):
    """SO_REUSEPORT would let a second set of workers join the port and take half of its
    connections; the start refuses instead, as a single process's bind does."""
    svc = start_workers(start_service, repo)
    second = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--workers", "2", "--port",
         str(svc.port), "--model-repository", str(repo)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 3, second.stderr[-2000:]  # uvicorn's STARTUP_FAILURE
    assert "Address already in use" in second.stderr
    assert infer(svc, 2).status_code == 200


def test_sighup_and_admin_reload_reach_every_worker(start_service, repo):
    svc = start_workers(start_service, repo)
    pids = set(served(svc))

    write_tiny_model(repo, version=2)
    svc.signal(signal.SIGHUP)  # to the supervisor, which forwards it
    wait_for(lambda: served(svc) == {pid: {2} for pid in pids})

    write_tiny_model(repo, version=3)
    r = fresh(svc, "POST", "/v1/admin/reload", headers=ADMIN)
    assert r.status_code == 200 and r.json()["models"][MODEL]["versions"] == [3]
    wait_for(lambda: served(svc) == {pid: {3} for pid in pids})
    answers = {infer(svc, 2).json()["model_version"] for _ in range(10)}
    assert answers == {"3"}

    write_tiny_model(repo, version=4, sha256="0" * 64)  # a corrupt upload
    r = fresh(svc, "POST", "/v1/admin/reload", headers=ADMIN)
    assert r.status_code == 409 and r.json()["code"] == "checksum_mismatch"
    time.sleep(1.5)  # the other worker's forwarded reload has run (and failed) by now
    assert served(svc) == {pid: {3} for pid in pids}
    assert svc.proc.poll() is None


def test_sigterm_drains_every_worker(start_service, repo):
    # batches wait up to 2 s to fill: requests sit in the workers' queues when SIGTERM comes
    svc = start_workers(start_service, repo, max_batch_size=64, max_queue_delay_ms=2000)
    workers = children(svc.proc.pid)
    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(infer, svc, 3) for _ in range(8)]
        svc.wait_for_metric("specula_queue_depth_rows", 24)  # summed over the workers
        svc.signal(signal.SIGTERM)
        answers = [f.result() for f in pending]
    assert [a.status_code for a in answers] == [200] * 8
    assert svc.proc.wait(60) == 0
    assert svc.log().count("drained and stopped") == 2  # each worker drained its batchers
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_killed_worker_is_replaced(start_service, repo):
    svc = start_workers(start_service, repo)
    victim, survivor = sorted(served(svc))
    os.kill(victim, signal.SIGKILL)
    now = wait_for(lambda: (len(s := served(svc)) == 2 and victim not in s) and s)
    assert survivor in now and now[survivor] == {1}
    (newcomer,) = set(now) - {survivor}
    assert now[newcomer] == {1} and newcomer in children(svc.proc.pid)
    assert all(infer(svc, 2).status_code == 200 for _ in range(6))
