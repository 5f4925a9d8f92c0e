"""A `specula serve` process on a free loopback port, for the HTTP tests (tests/service/api,
tests/ops, tests/service/test_cli.py).

The service runs in its own process, exactly as deployed, so signals (SIGTERM drain, SIGHUP
reload) and the registry of a fresh process are tested for real. The model repository holds
the tiny, untrained classifier of tests/support/tiny_classifier.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnxruntime as ort

from tests.support.loadgen import oip_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"
MODEL = "spectrum_classifier"
# what device=auto picks: CUDA where onnxruntime-gpu offers it (bench/gpu/device_check.sh runs
# these tests on a GPU), CPU everywhere else
PROVIDER = ("CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers()
            else "CPUExecutionProvider")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def oip_zeros(rows: int) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an OIP binary-tensor infer request of ``rows`` zero spectra."""
    p = oip_rows(rows, model=MODEL)
    return p.body, p.headers


class Service:
    """One `specula serve` process; ``url``, ``client`` and a metrics reader."""

    def __init__(self, repo: Path, log_path: Path, **settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SPECULA_MODEL_REPOSITORY": str(repo),
               "SPECULA_PORT": str(self.port), "SPECULA_ADMIN_TOKEN": ADMIN_TOKEN,
               "SPECULA_INTRA_OP_THREADS": "1", "SPECULA_PREPROCESS_WORKERS": "2"}
        env.update({f"SPECULA_{k.upper()}": str(v) for k, v in settings.items()})
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 — lives as long as the process
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"],
                                     cwd=REPO_ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log()}")
            try:
                if self.client.get("/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"service not ready in {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.client.get("/metrics").text.splitlines():
            m = re.match(r"^([a-zA-Z_:]+)(\{(.*)\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(4))
        return total

    def wait_for_metric(self, name: str, at_least: float, timeout: float = 30, **labels):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.metric(name, **labels) >= at_least:
                return
            time.sleep(0.02)
        raise AssertionError(f"{name}{labels} never reached {at_least}")

    def infer_rows(self, rows: int, client: httpx.Client | None = None, **headers: str
                   ) -> httpx.Response:
        """OIP infer of ``rows`` zero spectra as a binary tensor."""
        content, oip_headers = oip_zeros(rows)
        return (client or self.client).post(f"/v2/models/{MODEL}/infer", content=content,
                                            headers={**oip_headers, **headers})

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


