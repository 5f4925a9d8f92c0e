"""A minimal process supervisor: the container runtime's restart policy, as a script.

Why not `uvicorn --workers N`: its multiprocess supervisor uses SIGHUP to restart workers
(Specula uses SIGHUP to reload models), each worker would load every model again (memory x N)
and ONNX Runtime already uses the cores; one process per container with the runtime's
`restart: unless-stopped` (compose), `restartPolicy: Always` (Kubernetes) or systemd's
`Restart=always` as the supervisor is the deployment model (docs/operations.md). This script
behaves like those, so tests/ops/test_reliability.py can kill the worker and time the restart:

- runs the command; when it exits for any reason, runs it again after a back-off that starts at
  0.1 s and doubles on each quick failure (up to 5 s), resetting after 10 s of uptime;
- SIGTERM/SIGINT are forwarded to the worker, which drains; then the supervisor exits;
- one JSON line per event on stdout: {"supervisor": "started"|"exited", "pid": ..., ...}.

    python -m tests.support.supervisor -- specula serve
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time


def say(**event) -> None:
    print(json.dumps({"supervisor": event.pop("event"), "t": round(time.time(), 3), **event}),
          flush=True)


def main(argv: list[str]) -> int:
    cmd = argv[argv.index("--") + 1:] if "--" in argv else argv
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = 0.1
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(cmd)
        say(event="started", pid=child.pid)
        code = child.wait()
        say(event="exited", pid=child.pid, code=code)
        if stopping:
            break
        backoff = 0.1 if time.monotonic() - started > 10 else min(backoff * 2, 5.0)
        time.sleep(backoff)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
