"""One archive run's settings, its plan of work, and its summary: shared by both engines."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.inference.repository import ModelRepository, ModelVersion
from service.io.source import DEFAULT_MAX_BYTES

from .inputs import walk_inputs
from .resume import input_key, is_done, model_identity
from .units import DEFAULT_BYTES_PER_UNIT, DEFAULT_FILES_PER_UNIT, WorkUnit, plan_units


@dataclass
class ArchiveJob:
    inputs: list[str]
    output: str
    repository: str = "models"
    model: str = "spectrum_classifier"
    version: int | None = None
    device: str = "auto"
    reader_format: str | None = None  # force a reader (--format)
    batch_size: int = 256
    workers: int | None = None  # decode processes; None = usable CPUs - 1 (≥ 1); 0 = inline
    intra_op_threads: int = 0  # ORT; 0 = runner.auto_threads()
    files_per_unit: int = DEFAULT_FILES_PER_UNIT
    bytes_per_unit: int = DEFAULT_BYTES_PER_UNIT
    max_file_bytes: int = DEFAULT_MAX_BYTES
    part_rows: int = 500_000
    part_seconds: float = 60.0
    progress: bool = True

    def output_path(self) -> Path:
        return Path(self.output)

    def load_model(self) -> ModelVersion:
        return ModelRepository(self.repository).load(self.model, self.version)

    def decode_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, len(os.sched_getaffinity(0)) - 1)

    def record(self, model: ModelVersion) -> dict[str, Any]:
        """What ``_specula_job.json`` says about the run (the model is its identity)."""
        m = model.manifest
        return {"model": {"name": m.name, "version": m.version, "sha256": m.sha256.lower()},
                "labels": [lab.name for lab in m.labels], "top_classes": list(m.top_classes),
                "batch_size": self.batch_size, "files_per_unit": self.files_per_unit,
                "bytes_per_unit": self.bytes_per_unit}

    def units(self, model: ModelVersion, done: np.ndarray, summary: JobSummary,
              failed: np.ndarray | None = None) -> Iterator[WorkUnit]:
        """Work units still to do, in input order; whole units already done are counted in
        ``summary.files_skipped`` and not yielded, and those of them with error rows
        (``failed``) in ``summary.files_failed_before``: unchanged, they fail again."""
        ident = model_identity(model)
        for unit in plan_units(walk_inputs(self.inputs), lambda f: input_key(f, ident),
                               self.files_per_unit, self.bytes_per_unit):
            pending = sum(not is_done(done, k) for k in unit.keys)
            summary.files_skipped += len(unit.keys) - pending
            if failed is not None:
                summary.files_failed_before += sum(is_done(failed, k) for k in unit.keys)
            if pending:
                yield unit


@dataclass
class JobSummary:
    files_skipped: int = 0  # done by an earlier run
    files_failed_before: int = 0  # skipped, with error rows from an earlier run
    files_done: int = 0  # written by this run (ok or not)
    files_failed: int = 0  # written by this run with a file-level error
    spectra_ok: int = 0
    errors: Counter = field(default_factory=Counter)  # error code -> rows
    seconds: float = 0.0
    interrupted: bool = False
    # after the first unit is written: start-up (worker processes, Ray actors) excluded, the
    # rate a long run settles at
    warm_at: float | None = None  # seconds from start
    warm_spectra: int = 0

    def add(self, table: pa.Table, elapsed: float) -> None:
        if table.num_rows == 0:
            return
        self.files_done += len(pc.unique(table.column("file")))
        status = table.column("status")
        self.spectra_ok += pc.sum(pc.equal(status, "ok")).as_py() or 0
        err = table.filter(pc.equal(status, "error"))
        self.files_failed += pc.sum(pc.is_null(err.column("spectrum_index"))).as_py() or 0
        self.errors.update(err.column("error_code").to_pylist())
        if self.warm_at is None:
            self.warm_at, self.warm_spectra = elapsed, self.spectra_ok

    @property
    def spectra_per_s(self) -> float:
        return self.spectra_ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_spectra_per_s(self) -> float | None:
        """Spectra/s after the first unit: what a long run converges to."""
        if self.warm_at is None or self.seconds - self.warm_at <= 0:
            return None
        return (self.spectra_ok - self.warm_spectra) / (self.seconds - self.warm_at)

    def to_dict(self) -> dict[str, Any]:
        return {"files_done": self.files_done, "files_skipped": self.files_skipped,
                "files_failed_before": self.files_failed_before,
                "files_failed": self.files_failed, "spectra_ok": self.spectra_ok,
                "errors": dict(sorted(self.errors.items())), "seconds": round(self.seconds, 3),
                "spectra_per_s": round(self.spectra_per_s, 1),
                "steady_spectra_per_s": self.steady_spectra_per_s and round(
                    self.steady_spectra_per_s, 1),
                "interrupted": self.interrupted}

    @property
    def failed(self) -> bool:
        """Whether the output holds errors for this run's inputs: written now, or skipped
        from an earlier run (the exit status 1 either way; docs/archive.md)."""
        return bool(self.errors) or self.files_failed_before > 0

    def _failed_before(self) -> str:
        n = self.files_failed_before
        return f", {n} of them with errors from before" if n else ""

    def text(self) -> str:
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        return (f"{'interrupted' if self.interrupted else 'done'}: {self.files_done} files "
                f"({self.files_skipped} already done, skipped{self._failed_before()}), "
                f"{self.spectra_ok} spectra "
                f"classified, {self.files_failed} files failed; errors by code: {errs}; "
                f"{self.seconds:.1f} s, {self.spectra_per_s:.1f} spectra/s")
