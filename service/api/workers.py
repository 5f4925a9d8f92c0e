"""``specula serve --workers N``: N service processes on one listening socket.

Why more than one process: one Python process serves HTTP, decoding and batching under one
GIL, and that, not ONNX Runtime, is what limits it on a machine with spare cores or a GPU.
On the H200's 16 CPUs one process reached 2.3–2.8k single-row OIP requests/s and 300
single-FITS requests/s against ~120k spectra/s of raw ORT (bench/results/
2026-11-26-gpu-h200-session6.md); on the 2-core bench machine two processes ran single FITS
files at concurrency 32 2.0–2.5x faster than one (bench/bench_service.py --replicas).

The supervisor is uvicorn's own (``uvicorn.supervisors.Multiprocess``: binds the socket once,
spawns the workers, replaces a worker that dies or stops answering its health ping, forwards
SIGTERM/SIGINT so every worker drains, SIGTTIN/SIGTTOU add or remove a worker). One thing is
changed: uvicorn answers SIGHUP by *restarting* every worker, which would load every model
afresh — a version whose files were replaced by broken ones would stop being served instead
of the old one staying live. Here SIGHUP is forwarded to the workers, each of which reloads
in place exactly as a single process does (a failed reload keeps the old version serving).
SIGUSR1 does the same; a worker sends it to the supervisor when its admin reload endpoint is
called, so one ``POST /v1/admin/reload`` reaches every worker.

Metrics: with several workers, prometheus-client's multiprocess mode (its documented way for
pre-forked servers): each worker writes its samples to files in a private directory and any
worker's ``/metrics`` reads them all, so Prometheus scrapes one endpoint and sees totals.
Each worker has its own batcher queue (``SPECULA_MAX_QUEUE_ROWS`` is per worker; the exported
capacity is their sum) and runs CPUs ÷ workers concurrent batches by default.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import tempfile

import uvicorn
from prometheus_client import multiprocess
from uvicorn.supervisors.multiprocess import Multiprocess

from service.settings import Settings

from .logs import configure_logging

log = logging.getLogger("specula.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SUPERVISOR_ENV = "SPECULA_SUPERVISOR_PID"


class Supervisor(Multiprocess):
    """uvicorn's supervisor, with SIGHUP (and SIGUSR1) forwarded instead of restarting."""

    def handle_hup(self) -> None:
        log.info("SIGHUP: forwarded to the workers, each reloads its models")
        self.signal_workers(signal.SIGHUP)

    def handle_usr1(self) -> None:
        log.info("a worker's reload endpoint was called: the other workers reload too")
        self.signal_workers(signal.SIGHUP)

    def signal_workers(self, sig: int) -> None:
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                try:
                    os.kill(process.pid, sig)
                except ProcessLookupError:  # died meanwhile; keep_subprocess_alive replaces it
                    pass

    def keep_subprocess_alive(self) -> None:
        """uvicorn's, plus: a replaced worker's live gauges leave the exported totals."""
        before = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {p.pid for p in self.processes}:
            if pid is not None:
                multiprocess.mark_process_dead(pid)


def worker_app(settings: Settings):
    """The app in a worker process (the factory uvicorn calls after spawning it)."""
    from .main import create_app

    configure_logging(settings.log_level)
    return create_app(settings)


def notify_supervisor() -> bool:
    """Ask the supervisor (if this process is one of its workers) to have every worker
    reload; True when there is one."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or int(supervisor) != os.getppid():
        return False
    os.kill(int(supervisor), signal.SIGUSR1)
    return True


def serve_workers(settings: Settings) -> None:
    """Run ``settings.workers`` worker processes until SIGTERM/SIGINT; blocks."""
    metrics_dir = tempfile.mkdtemp(prefix="specula-metrics-")
    # read by prometheus-client when the spawned workers import it
    os.environ[MULTIPROC_ENV] = metrics_dir
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    config = uvicorn.Config(
        functools.partial(worker_app, settings), factory=True, host=settings.host,
        port=settings.port, workers=settings.workers, log_config=None, access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_s, timeout_keep_alive=30,
        timeout_worker_healthcheck=30)
    sock = config.bind_socket()
    log.info("starting workers", extra={"workers": settings.workers, "port": settings.port,
                                        "metrics_dir": metrics_dir})
    try:
        Supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
