"""What to classify: files, directories walked recursively, or text files listing paths.

A stream, never a list: an archive of 20 million files is walked with ``os.scandir`` one
directory at a time, so memory does not grow with the archive. Order is deterministic
(entries sorted per directory) because work units are cut from this order, and a rerun must
cut the same units. A path that cannot be stat'ed is still yielded (size -1): it becomes an
error row, like any other unreadable file, instead of vanishing from the output.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# A file with one of these suffixes is a list of paths (one per line, '#' comments), e.g. the
# output of `find /archive -name 'spec-*.fits' > todo.txt`. Relative entries are taken
# relative to the current directory, as `find` wrote them.
LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file and the stat that, with the model, identifies work already done."""

    path: str
    size: int  # bytes; -1 when the file could not be stat'ed
    mtime_ns: int


def stat_input(path: str) -> InputFile:
    try:
        st = os.stat(path)
    except OSError:
        return InputFile(path, -1, 0)
    return InputFile(path, st.st_size, st.st_mtime_ns)


def _walk_dir(root: str) -> Iterator[str]:
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        yield root  # unreadable directory: reported as an error row
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=True):
            yield from _walk_dir(e.path)
        else:
            yield e.path


def _read_list(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def walk_paths(paths: Iterable[str]) -> Iterator[str]:
    """Every file path named by ``paths``, in order, without stat'ing files."""
    for p in paths:
        if os.path.isdir(p):
            yield from _walk_dir(p)
        elif p.lower().endswith(LIST_SUFFIXES) and os.path.isfile(p):
            for entry in _read_list(p):
                yield from _walk_dir(entry) if os.path.isdir(entry) else [entry]
        else:
            yield p


def walk_inputs(paths: Iterable[str]) -> Iterator[InputFile]:
    """Every input file with its size and mtime, streamed."""
    for p in walk_paths(paths):
        yield stat_input(p)


def count_inputs(paths: Iterable[str]) -> int:
    """How many files ``walk_inputs`` will yield (a cheap pass for the progress bar's ETA)."""
    return sum(1 for _ in walk_paths(paths))
