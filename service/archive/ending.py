"""How a run starts and ends, the same for every engine: the output it resumes, what survives
a failure, and what marks success.

The engines differ in how units are decoded and inferred; they must not differ in what they
resume from, or in what a crash, a second Ctrl-C or a clean finish leaves in the output
directory, so that lives here once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.inference.repository import ModelVersion

from .job import ArchiveJob, JobSummary
from .progress import Progress
from .resume import done_keys
from .schema import schema_for
from .stopping import StopRequest
from .writer import OutputDirectory, PartWriter


@dataclass(frozen=True)
class EngineRun:
    """What an engine's main loop works with, opened by :func:`engine_run`."""

    output: OutputDirectory
    summary: JobSummary
    progress: Progress
    stop: StopRequest  # ``stop.requested``: checked between units
    done: np.ndarray  # the input keys already committed (resume skips them)
    writer: PartWriter
    started: float  # time.perf_counter() at the start, for the summary's rates

    def finish(self, success: dict[str, Any]) -> None:
        """:func:`finish` for this run; ``success`` is what the engine adds to ``_SUCCESS``."""
        finish(self.summary, self.writer, self.output, interrupted=self.stop.requested,
               started=self.started, success=success)


@contextmanager
def engine_run(job: ArchiveJob, model: ModelVersion) -> Iterator[EngineRun]:
    """Open the output of ``job`` (locked, with the keys it already holds) and a part writer
    on it, take Ctrl-C/SIGTERM as a stop request, and undo all of that on the way out (the
    signal handlers, the progress bar, the output lock), however the engine's loop ends."""
    output = OutputDirectory(job.output, job.record(model))
    summary = JobSummary()
    progress = Progress(job.inputs, job.progress)
    started = time.perf_counter()
    try:
        with StopRequest() as stop:
            done = done_keys(output.path)
            writer = PartWriter(output, schema_for(model), part_rows=job.part_rows,
                                part_seconds=job.part_seconds)
            yield EngineRun(output, summary, progress, stop, done, writer, started)
    finally:
        progress.close()
        output.close()


def keep_finished(writer: PartWriter) -> None:
    """Commit the rows of the units finished before a failure, so a rerun skips them; if
    the writer itself is what failed, drop the open part instead (it is redone)."""
    try:
        writer.commit()
    except Exception:  # noqa: BLE001 — the original error is the one to report
        writer.abort()


@contextmanager
def keeping_finished_units(writer: PartWriter) -> Iterator[None]:
    """Around an engine's main loop: a second Ctrl-C drops the open part; any other failure
    (a dead worker, a lost node) keeps the finished units, then propagates."""
    try:
        yield
    except KeyboardInterrupt:
        writer.abort()
    except Exception:
        keep_finished(writer)
        raise


def finish(summary: JobSummary, writer: PartWriter, output: OutputDirectory, *,
           interrupted: bool, started: float, success: dict[str, Any]) -> None:
    """Commit the open part, time the run, and mark success unless the run was stopped."""
    summary.interrupted = interrupted
    writer.commit()
    summary.seconds = time.perf_counter() - started
    if not interrupted:
        output.mark_success({**summary.to_dict(), **success})
