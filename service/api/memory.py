"""glibc's allocator told to keep the memory of large uploads for the next one.

Why: glibc serves every allocation above ``M_MMAP_THRESHOLD`` (128 KB, rising by itself to at
most 32 MB) with fresh pages from the kernel, and returns freed memory above the heap's top
once more than ``M_TRIM_THRESHOLD`` is free. A 79 MB exposure of 2,436 spectra as an OIP
tensor arrives in chunks that are joined into one body, and each such request faulted in
~32,000 fresh pages: 120–160 ms of the service's CPU in the kernel, against 20–33 ms with the
thresholds raised, and 4–13 % less CPU per request in total (alternated runs,
bench/results/2026-11-26-cpu-floor.md). A survey pipeline sends such requests all
night, so the memory is better kept than handed back and faulted in again.

The cost: freed memory is reused, not returned, so a worker's resident memory stays near its
high-water mark. That mark is bounded anyway: bodies by ``SPECULA_MAX_BODY_BYTES`` each and
by ``SPECULA_MAX_INFLIGHT_BYTES`` together. Operators who set glibc's own ``MALLOC_*``
variables keep theirs; on other C libraries (musl, macOS) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

from service.settings import Settings

log = logging.getLogger("specula.memory")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
OWN_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_upload_memory(settings: Settings) -> bool:
    """Raise glibc's mmap and trim thresholds above the largest body and all bodies in
    flight; True when they were set. Called once per serving process, before it serves."""
    if any(k in os.environ for k in OWN_SETTINGS):
        log.info("allocator left as configured by the environment")
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to tune
        return False
    mmap_threshold = min(settings.max_body_bytes + 1, 2**31 - 1)  # mallopt takes a C int
    trim_threshold = min(max(settings.max_inflight_bytes, settings.max_body_bytes), 2**31 - 1)
    done = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold))
    log.debug("allocator thresholds", extra={"mmap_threshold": mmap_threshold,
                                             "trim_threshold": trim_threshold, "set": done})
    return done
