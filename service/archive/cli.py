"""``specula classify ... --output results.parquet [--engine ray]``: argparse → ArchiveJob.

The options are parsed by ``service.archive.classify`` (one ``classify`` command); this
module only builds the job, picks the engine and turns the outcome into an exit status:
0 all done, 1 some file or spectrum of the inputs failed (rows with status=error), in this
run or in an earlier one whose rows it skipped, 2 the model or the
output directory cannot be used, 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import sys

from service.inference.repository import ModelError

from .job import ArchiveJob
from .local import print_summary, run_local
from .writer import OutputError


def job_from_args(args: argparse.Namespace, output: str) -> ArchiveJob:
    job = ArchiveJob(inputs=list(args.files), output=output, repository=args.repository,
                     model=args.model, version=args.version, device=args.device,
                     reader_format=args.format, batch_size=args.batch_size,
                     workers=args.workers, progress=not args.quiet)
    if args.files_per_unit:
        job.files_per_unit = args.files_per_unit
    return job


def run_archive(args: argparse.Namespace, output: str) -> int:
    job = job_from_args(args, output)
    try:
        if args.engine == "ray":
            from .ray_engine import run_ray  # ray is an optional extra
            summary = run_ray(job, address=args.address, actors=args.actors)
        else:
            summary = run_local(job)
    except (ModelError, OutputError) as exc:
        print(f"specula classify: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0
