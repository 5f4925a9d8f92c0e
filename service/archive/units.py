"""Work units: consecutive input files cut into groups, the grain of everything downstream.

A unit is decoded by one worker (process or Ray task), inferred as one sequence of ONNX
Runtime batches, and committed to the output as a whole. Why units and not a free stream of
spectra: ONNX Runtime's floats for a row depend on the batch the row is in (a batch of 1
differs from a batch of 256 in the last bit), so two engines that must agree exactly have to
build the same batches. Units are a function of the input order and sizes only, so the
single-machine and Ray engines (and a rerun) cut identical ones.

A unit closes at ``max_files`` files or ``max_bytes`` of input, whichever comes first, so a
unit of exposure containers (2,436 fibres each) stays as bounded in memory as a unit of
single-spectrum files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .inputs import InputFile

DEFAULT_FILES_PER_UNIT = 64
DEFAULT_BYTES_PER_UNIT = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkUnit:
    index: int
    files: tuple[InputFile, ...]
    keys: tuple[int, ...]  # resume key per file (resume.input_key)


def plan_units(files: Iterable[InputFile], keys_of, max_files: int = DEFAULT_FILES_PER_UNIT,
               max_bytes: int = DEFAULT_BYTES_PER_UNIT) -> Iterator[WorkUnit]:
    """Cut the stream of files into units; ``keys_of(file)`` gives each file's resume key."""
    batch: list[InputFile] = []
    size = 0
    index = 0
    for f in files:
        batch.append(f)
        size += max(f.size, 0)
        if len(batch) >= max_files or size >= max_bytes:
            yield WorkUnit(index, tuple(batch), tuple(keys_of(x) for x in batch))
            index += 1
            batch, size = [], 0
    if batch:
        yield WorkUnit(index, tuple(batch), tuple(keys_of(x) for x in batch))
