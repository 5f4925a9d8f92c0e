"""The run log both trainers write: timestamped lines to stdout and the run's log file."""

from __future__ import annotations

import time
from pathlib import Path


class Logger:
    """Timestamped lines to stdout and the run's log file (both trainers use it)."""

    def __init__(self, path: Path | None):
        self.t0 = time.time()
        self.f = open(path, "a") if path else None  # noqa: SIM115 — lives with the run

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} +{time.time() - self.t0:6.0f}s] {msg}"
        print(line, flush=True)
        if self.f:
            self.f.write(line + "\n")
            self.f.flush()
