"""Run one archive job in its own process, committing a part after every file, so a test can
kill it mid-run: ``python -m tests.support.archive_job_process INPUT OUTPUT MODELS`` (from
the repository root); exit 130 when
interrupted."""

from __future__ import annotations

import sys

from service.archive import ArchiveJob
from service.archive.local import run_local


def job(inputs: str, output: str, models: str, *, inline: bool = False) -> ArchiveJob:
    """One file per unit; as a killable process: a part per unit and a decode worker; inline
    (the reference and the resuming run, in the test's process): one part, no workers."""
    return ArchiveJob([inputs], output, repository=models, files_per_unit=1,
                      part_rows=1_000_000 if inline else 1, workers=0 if inline else 1,
                      progress=False)


if __name__ == "__main__":
    summary = run_local(job(*sys.argv[1:4]))
    sys.exit(130 if summary.interrupted else 0)
