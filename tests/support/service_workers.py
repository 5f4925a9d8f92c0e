"""`specula serve --workers N` seen from outside, for the tests that run it
(tests/service/api/test_api_workers.py, test_api_process_metrics.py).

Which worker answers a request is the kernel's choice, so the helpers ask on a new connection
each time and wait for the state they expect rather than assume it: the workers come up,
and pick up a reload, one by one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.support.http_service import MODEL

INFO = re.compile(r'^specula_model_info\{model="(?P<model>[^"]+)",pid="(?P<pid>\d+)",'
                  r'[^}]*version="(?P<version>\d+)"\} (?P<value>\S+)$', re.MULTILINE)


def fresh(svc, method: str, path: str, **kw) -> httpx.Response:
    """One request on a new connection: the kernel hands it to whichever worker accepts."""
    with httpx.Client(base_url=svc.url, timeout=60) as client:
        return client.request(method, path, **kw)


def served(svc) -> dict[int, set[int]]:
    """Worker pid → versions of the model it serves, from specula_model_info."""
    out: dict[int, set[int]] = {}
    for m in INFO.finditer(fresh(svc, "GET", "/metrics").text):
        if m["model"] == MODEL and float(m["value"]) == 1:
            out.setdefault(int(m["pid"]), set()).add(int(m["version"]))
    return out


def wait_for(predicate, timeout: float = 60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition never became true")


def children(pid: int) -> set[int]:
    """Live child processes of ``pid`` that are service workers (not multiprocessing's
    resource tracker)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmdline:
            out.add(int(stat.parent.name))
    return out


def start_workers(start_service, repo: Path, n: int = 2, **settings):
    """A service of ``n`` workers (``start_service``: the fixture of tests/service/api), once
    every worker serves the model and exactly the supervisor's children do."""
    svc = start_service(repo, workers=n, version_policy="latest", **settings)
    pids = wait_for(lambda: len(s := served(svc)) == n and set(s))
    assert pids == children(svc.proc.pid), "the info series are the supervisor's workers"
    return svc
