"""The single-machine engine: decode in worker processes, infer here, write Parquet parts.

Decoding FITS and resampling is CPU work in Python and numpy, so it runs in a
``ProcessPoolExecutor`` (threads would share one GIL for the Python parts); the ONNX Runtime
session stays in this process, fed unit by unit as workers finish. At most ``2 × workers``
units are in flight and results are taken in submission order, so memory is constant however
many files there are, and output order follows input order.

Ctrl-C (SIGINT, also SIGTERM): workers ignore it; this process finishes the unit in hand,
commits the part it has open (every finished unit is kept), and reports ``interrupted``. A SIGKILL loses
the open part only; the next run deletes its temp file and redoes those units, and the
workers notice their parent is gone within a second and exit. A worker that dies
(BrokenProcessPool) stops the run with that error after the finished units are committed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from service.inference.kinds.spectrum import build_pipeline
from service.inference.repository import ModelVersion

from .ending import engine_run, keeping_finished_units
from .infer import infer_unit
from .job import ArchiveJob, JobSummary
from .prepare import (
    PreparedUnit,
    decoding_pipeline,
    init_worker,
    prepare_in_worker,
    prepare_unit,
    weightless,
)
from .resume import failed_keys, is_done
from .schema import schema_for
from .stopping import StopRequest
from .units import WorkUnit
from .writer import OutputDirectory


def _quiet_worker(*args: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_with_parent(os.getppid())
    init_worker(*args)  # type: ignore[arg-type]


def _exit_with_parent(parent: int, period_s: float = 0.5) -> None:
    """Exit this worker once the job process that started it is gone. A SIGKILLed job (the
    OOM killer, a preempted node) cannot shut its pool down, and its workers then wait on
    their task pipe forever: they hold its other end themselves, so no EOF ever comes. Each
    killed run left a 130 MB worker, and the resource tracker beside it, behind. A polled
    ``getppid`` rather than ``prctl(PR_SET_PDEATHSIG)``: that fires when the *thread* that
    started the worker exits, and the pool may start workers from a thread that ends first."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_local(job: ArchiveJob) -> JobSummary:
    model = job.load_model()
    pipeline = build_pipeline(model, job.device, job.intra_op_threads)
    schema = schema_for(model)
    with engine_run(job, model) as run:
        summary, writer, stop = run.summary, run.writer, run.stop
        skipped_seen = 0

        def consume(unit: PreparedUnit) -> None:
            nonlocal skipped_seen
            table = infer_unit(pipeline, unit, job.batch_size, schema,
                               skip=lambda key: is_done(run.done, key))
            writer.write(table)
            writer.commit_if_due()
            summary.add(table, time.perf_counter() - run.started)
            run.progress.update(len(unit.files) + summary.files_skipped - skipped_seen,
                                summary.spectra_ok)
            skipped_seen = summary.files_skipped

        units = job.units(model, run.done, summary, failed_keys(run.output.path))
        workers = job.decode_workers()
        with keeping_finished_units(writer):
            if workers == 0:
                decoder = decoding_pipeline(model, job.max_file_bytes)
                for unit in units:
                    if stop.requested:
                        break
                    if not summary.files_done:
                        run.output.clear_success()
                    consume(prepare_unit(decoder, unit, job.reader_format))
            else:
                _run_pool(job, model, units, consume, run.output, workers, stop)
        run.progress.update(summary.files_skipped - skipped_seen)
        run.finish({"parts": len(list(run.output.path.glob("part-*.parquet")))})
    return summary


def _run_pool(job: ArchiveJob, model: ModelVersion, units: Iterator[WorkUnit],
              consume: Callable[[PreparedUnit], None], output: OutputDirectory, workers: int,
              stop: StopRequest) -> None:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding ORT threads
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_quiet_worker,
                               initargs=(weightless(model), job.max_file_bytes,
                                         job.reader_format))
    window: deque[Future[PreparedUnit]] = deque()
    try:
        for unit in units:
            if stop.requested:
                return
            if not window:
                output.clear_success()  # there is work: the old marker no longer holds
            window.append(pool.submit(prepare_in_worker, unit))
            if len(window) >= 2 * workers:
                consume(window.popleft().result())
        while window and not stop.requested:
            consume(window.popleft().result())
    finally:
        for fut in window:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def print_summary(summary: JobSummary) -> None:
    print(f"specula classify: {summary.text()}", file=sys.stderr)
