"""Process metrics (RSS, CPU, open fds) on /metrics, scraped over HTTP.

One process: prometheus-client's ProcessCollector on the app's registry. ``--workers N``:
one series per live worker, labelled ``pid`` and read from its ``/proc`` at scrape time
(service.metrics.WorkerProcessCollector), whichever worker answers the scrape.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.support.service_workers import children, fresh, start_workers, wait_for
from tests.support.tiny_classifier import write_tiny_model

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]
PROCESS = ("process_resident_memory_bytes", "process_virtual_memory_bytes",
           "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
           "process_start_time_seconds")
SAMPLE = re.compile(r'^(?P<name>process_\w+)(?:\{pid="(?P<pid>\d+)"\})? (?P<value>\S+)$',
                    re.MULTILINE)


def process_samples(text: str) -> dict[str, dict[str | None, float]]:
    """name → pid (None without the label) → value."""
    out: dict[str, dict[str | None, float]] = {}
    for m in SAMPLE.finditer(text):
        out.setdefault(m["name"], {})[m["pid"]] = float(m["value"])
    return out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_process_metrics_of_a_single_process(service):
    samples = process_samples(service.client.get("/metrics").text)
    assert set(PROCESS) <= set(samples), sorted(samples)
    rss = samples["process_resident_memory_bytes"][None]
    # the serving process's own RSS (a model and numpy loaded: tens of MB at least)
    assert rss == pytest.approx(rss_bytes(service.proc.pid), rel=0.5)
    assert rss > 20e6
    assert samples["process_open_fds"][None] >= 3
    assert samples["process_cpu_seconds_total"][None] > 0


def test_process_metrics_of_every_worker(start_service, tmp_path):
    repo = tmp_path / "models"
    write_tiny_model(repo, version=1)
    svc = start_workers(start_service, repo)
    workers = {str(p) for p in children(svc.proc.pid)}
    for _ in range(4):  # whichever worker answers, every worker's series is there
        samples = wait_for(lambda: (s := process_samples(fresh(svc, "GET", "/metrics").text))
                           and set(s.get("process_resident_memory_bytes", {})) == workers
                           and s)
        for name in PROCESS:
            assert set(samples[name]) == workers, name
        for pid in workers:
            assert samples["process_resident_memory_bytes"][pid] > 20e6
            assert samples["process_open_fds"][pid] >= 3
