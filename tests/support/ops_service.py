"""`specula serve` on a free loopback port, optionally through another command.

Extends http_service.py's ``Service`` (same environment, readiness wait, metrics reader and
stop) with ``argv``: the fault tests run the service through a wrapper (faulty_serve.py) or a
supervisor (supervisor.py) instead, both as ``python -m tests.support.X`` from the repository
root, which is what puts the ``tests`` and ``service`` packages on their path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.http_service import ADMIN_TOKEN, REPO_ROOT, Service, free_port

SERVE = [sys.executable, "-m", "service.cli", "serve"]


class OpsService(Service):
    def __init__(self, repo: Path, log_path: Path, argv: list[str] | None = None,
                 wait: bool = True, **settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SPECULA_MODEL_REPOSITORY": str(repo),
               "SPECULA_PORT": str(self.port), "SPECULA_ADMIN_TOKEN": ADMIN_TOKEN,
               "SPECULA_INTRA_OP_THREADS": "1", "SPECULA_PREPROCESS_WORKERS": "2"}
        for k, v in settings.items():
            env[f"SPECULA_{k.upper()}"] = v if isinstance(v, str) else (
                json.dumps(v) if isinstance(v, list) else str(v))
        self.env = env
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 — lives as long as the process
        self.proc = subprocess.Popen(argv or SERVE, cwd=REPO_ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        if wait:
            self._wait_ready()

    def access_log(self, path_prefix: str | tuple[str, ...] = ("/v1/spectra",
                                                                "/v2/models")) -> list[dict]:
        """The service's access-log lines (JSON) whose path starts with ``path_prefix``
        (default: the inference routes)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "request" and str(rec.get("path", "")).startswith(
                    path_prefix):
                out.append(rec)
        return out
