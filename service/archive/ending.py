"""How a run ends, the same for every engine: what survives a failure, and what marks success.

The engines differ in how units are decoded and inferred; they must not differ in what a crash,
a second Ctrl-C or a clean finish leaves in the output directory, so that lives here once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .job import JobSummary
from .writer import OutputDirectory, PartWriter


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
