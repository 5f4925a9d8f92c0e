"""The output: a directory of Parquet parts, each written to a hidden temp file and renamed.

Why parts and renames: a crash (SIGKILL, power loss) can only ever leave a ``.part-*.tmp``
behind, which Parquet readers skip (pyarrow, pandas, Spark and DuckDB ignore names starting
with ``.`` or ``_``) and the next run deletes; every ``part-*.parquet`` is complete (closed
footer, fsync'ed before the rename). Rows go out in row groups as they come, so memory stays
bounded; a part is committed only between work units, at ``part_rows`` rows or
``part_seconds`` of work, so a kill loses at most that much and Ctrl-C loses nothing (the
open part is committed on the way out).

``_SUCCESS`` (JSON: the summary) appears when a run finished every input; a rerun that has
work to do removes it first. ``_specula_job.json`` records the model: one output directory
holds one model's results, and a run with another model is refused rather than mixed in. A
lock file keeps two runs from writing the same directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .resume import committed_parts

JOB_FILE = "_specula_job.json"
SUCCESS_FILE = "_SUCCESS"
LOCK_FILE = ".lock"


class OutputError(Exception):
    """The output directory cannot take this run (another model, another writer)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class OutputDirectory:
    """Owns the directory for one run: lock, job record, temp clean-up, success marker."""

    def __init__(self, path: str | os.PathLike, job: dict[str, Any]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise OutputError(f"{self.path} is being written by another run") from None
        record = self.path / JOB_FILE
        if record.exists():
            previous = json.loads(record.read_text())
            if previous.get("model") != job.get("model"):
                self.close()
                raise OutputError(f"{self.path} holds results of {previous.get('model')}; "
                                  f"this run is {job.get('model')}: use another --output")
        else:
            write_atomic(record, json.dumps(job, indent=2).encode())
        for tmp in self.path.glob(".part-*.tmp"):  # left by a killed run
            tmp.unlink()

    def next_part_number(self) -> int:
        numbers = [int(p.stem.split("-")[1]) for p in committed_parts(self.path)]
        return max(numbers, default=-1) + 1

    def clear_success(self) -> None:
        (self.path / SUCCESS_FILE).unlink(missing_ok=True)

    def mark_success(self, summary: dict[str, Any]) -> None:
        write_atomic(self.path / SUCCESS_FILE, json.dumps(summary, indent=2).encode())

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


class PartWriter:
    """Row groups into a temp part; ``commit_if_due`` between units renames it into place."""

    def __init__(self, output: OutputDirectory, schema: pa.Schema, *, part_rows: int = 500_000,
                 part_seconds: float = 60.0, row_group_rows: int = 16_384) -> None:
        self.output = output
        self.schema = schema
        self.part_rows = part_rows
        self.part_seconds = part_seconds
        self.row_group_rows = row_group_rows
        self._number = output.next_part_number()
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._part_rows = 0
        self._opened = 0.0
        self.committed: list[Path] = []

    def write(self, table: pa.Table) -> None:
        """Add rows (one unit's); they reach disk in row groups of ``row_group_rows``."""
        if table.num_rows == 0:
            return
        if self._part_rows == 0:
            self._opened = time.monotonic()
        self._pending.append(table.cast(self.schema) if table.schema != self.schema else table)
        self._pending_rows += table.num_rows
        self._part_rows += table.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            self._tmp = self.output.path / f".part-{self._number:05d}.parquet.tmp"
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self._writer.write_table(pa.concat_tables(self._pending),
                                 row_group_size=max(self._pending_rows, 1))
        self._pending, self._pending_rows = [], 0

    def commit_if_due(self) -> None:
        """Call between units: commit the part once it is big or old enough."""
        if self._part_rows and (self._part_rows >= self.part_rows
                                or time.monotonic() - self._opened >= self.part_seconds):
            self.commit()

    def commit(self) -> None:
        """Close the open part (footer, fsync) and rename it to ``part-NNNNN.parquet``."""
        self._flush()
        if self._writer is None or self._tmp is None:
            return
        self._writer.close()
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        final = self.output.path / f"part-{self._number:05d}.parquet"
        os.replace(self._tmp, final)
        _fsync_dir(self.output.path)
        self.committed.append(final)
        self._writer, self._tmp = None, None
        self._number += 1
        self._part_rows = 0

    def abort(self) -> None:
        """Drop the open part (its units will be redone by the next run)."""
        if self._writer is not None:
            self._writer.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._writer, self._tmp, self._pending = None, None, []
