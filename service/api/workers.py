"""``specula serve --workers N``: N service processes on one port.

Why more than one process: one Python process serves HTTP, decoding and batching under one
GIL, and that, not ONNX Runtime, is what limits it on a machine with spare cores or a GPU.
On the H200's 16 CPUs one process reached 2.3–2.8k single-row OIP requests/s and 300
single-FITS requests/s against ~120k spectra/s of raw ORT (bench/results/
2026-11-26-gpu-h200-workers.md); on the 2-core bench machine two workers ran single FITS
files at concurrency 32 2.4–2.9x faster than one (bench/bench_service.py --workers;
bench/results/2026-11-26-cpu-service-workers.md).

The supervisor is uvicorn's own (``uvicorn.supervisors.Multiprocess``: spawns the workers,
replaces a worker that dies or stops answering its health ping, forwards SIGTERM/SIGINT so
every worker drains), with three changes:

- **One listening socket per worker**, each bound with ``SO_REUSEPORT`` to the same address,
  where uvicorn shares one socket among all workers. On a shared socket the worker that wakes
  first accepts a whole burst of connections (asyncio accepts up to 100 per wake-up): in the
  bench, 32 clients connecting at once all landed on one of two workers, and two-worker runs
  were no faster than one (exposures slower: that worker ran half the concurrent batches).
  With a socket each, the kernel spreads connections over the workers by their address hash.
  A replaced worker takes over its predecessor's socket; connections that arrive meanwhile
  wait in that socket's backlog. SIGTTIN/SIGTTOU (uvicorn's add/remove a worker) are refused:
  removing one would leave its socket without anyone accepting.
- **SIGHUP is forwarded** to the workers, each of which reloads in place exactly as a single
  process does (a failed reload keeps the old version serving). uvicorn answers SIGHUP by
  restarting every worker, which loads every model afresh: a version whose files were replaced
  by broken ones would stop being served instead of the old one staying live. SIGUSR1 does the
  same as SIGHUP; a worker sends it to the supervisor when its admin reload endpoint is
  called, so one ``POST /v1/admin/reload`` reaches every worker.
- a replaced worker's live gauges are dropped from the metrics (prometheus-client's
  ``mark_process_dead``).
- **SIGTERM**: the supervisor closes its own copies of the sockets before forwarding the
  signal, so that each socket closes for good when its worker, which drains the connections
  already queued on it first (service.api.shutdown), closes it; a copy left open in the
  supervisor would keep queueing connections no one accepts, reset when it exits. Each
  worker runs Specula's :class:`~service.api.shutdown.DrainingServer`, not uvicorn's.

Metrics: with several workers, prometheus-client's multiprocess mode (its documented way for
pre-forked servers): each worker writes its samples to files in a private directory and any
worker's ``/metrics`` reads them all, so Prometheus scrapes one endpoint and sees totals.
Each worker has its own batcher queue (``SPECULA_MAX_QUEUE_ROWS`` is per worker; the exported
capacity is their sum) and may run as many concurrent batches as a single process would.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile

import uvicorn
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from service.metrics import MULTIPROC_ENV
from service.settings import Settings

from .logs import configure_logging
from .memory import keep_upload_memory
from .reload_signal import SUPERVISOR_ENV
from .shutdown import DrainingServer

log = logging.getLogger("specula.workers")


class WorkerProcess(Process):
    """uvicorn's worker process, serving with Specula's shutdown (DrainingServer)."""

    @property
    def server(self) -> DrainingServer:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's, but a worker whose app refused to start (no model loaded) exits with
        STARTUP_FAILURE: it would fail again, so the supervisor stops instead of replacing it."""
        super().target(sockets)
        if not self.server.started:
            sys.exit(STARTUP_FAILURE)


class Supervisor(Multiprocess):
    """uvicorn's supervisor: a socket per worker, SIGHUP (and SIGUSR1) forwarded."""

    startup_failed = False  # a worker could not start: `specula serve` exits non-zero

    def init_processes(self) -> None:
        """Worker i listens on ``sockets[i]`` (one socket per worker: serve_workers)."""
        for sock in self.sockets:
            process = WorkerProcess(self.config, [sock])
            process.start()
            self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        """uvicorn's, except that a replacement gets its predecessor's socket and that the
        dead worker's live gauges leave the exported metrics."""
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or already gone
            process.join()
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid)
            if process.exitcode == STARTUP_FAILURE:  # broken app or settings: fails again
                log.error("worker %s failed to start; stopping", process.pid)
                self.startup_failed = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.warning("worker %s died (exit code %s); starting a replacement",
                        process.pid, process.exitcode)
            replacement = WorkerProcess(self.config, [self.sockets[idx]])
            replacement.start()
            self.processes[idx] = replacement

    def terminate_all(self) -> None:
        """Close the supervisor's copies of the sockets, then forward SIGTERM: each worker
        holds the last copy of its socket and closes it once it has taken what was queued."""
        for sock in self.sockets:
            sock.close()
        super().terminate_all()

    def handle_ttin(self) -> None:
        log.warning("SIGTTIN ignored: the number of workers is fixed (SPECULA_WORKERS)")

    def handle_ttou(self) -> None:
        log.warning("SIGTTOU ignored: the number of workers is fixed (SPECULA_WORKERS)")

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


def worker_app(settings: Settings):
    """The app in a worker process (the factory uvicorn calls after spawning it)."""
    from .main import create_app  # deferred: only workers import the app, not the supervisor

    configure_logging(settings.log_level)
    keep_upload_memory(settings)
    return create_app(settings)


def reuseport_sockets(host: str, port: int, n: int, backlog: int = 2048
                      ) -> list[socket.socket]:
    """``n`` listening sockets on one address, the kernel balancing connections over them.

    The address is first bound once without ``SO_REUSEPORT``: a port already served — by
    anything, another Specula's workers included, which ``SO_REUSEPORT`` alone would quietly
    join — stops the start as a single process's bind would. The sockets listen at once (as
    gunicorn's master does), so a second service cannot slip in while the workers load their
    models; a connection made meanwhile waits in the backlog until a worker accepts it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]  # port 0: the one the kernel chose, for all
        for _ in range(n):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in socks:
            sock.close()
        log.error("cannot listen on %s:%s: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    return socks


def serve_workers(settings: Settings) -> int:
    """Run ``settings.workers`` worker processes until SIGTERM/SIGINT; blocks. Returns the exit
    status: STARTUP_FAILURE when a worker could not start (e.g. no model loaded), else 0."""
    metrics_dir = tempfile.mkdtemp(prefix="specula-metrics-")
    # read by prometheus-client when the spawned workers import it
    os.environ[MULTIPROC_ENV] = metrics_dir
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    config = uvicorn.Config(
        functools.partial(worker_app, settings), factory=True, host=settings.host,
        port=settings.port, workers=settings.workers, log_config=None, access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_s, timeout_keep_alive=30,
        timeout_worker_healthcheck=30)
    socks = reuseport_sockets(settings.host, settings.port, settings.workers, config.backlog)
    log.info("starting workers", extra={"workers": settings.workers, "port": settings.port,
                                        "metrics_dir": metrics_dir})
    supervisor = Supervisor(config, sockets=socks)
    try:
        supervisor.run()
    finally:
        for sock in socks:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return STARTUP_FAILURE if supervisor.startup_failed else 0
