"""Large uploads reuse the memory of the ones before (service/api/memory.py).

A whole exposure as an OIP tensor is ~79 MB; past glibc's 32 MB ceiling for its own mmap
threshold, every such body was faulted in from the kernel page by page. The service raises
the thresholds at start, unless the operator set glibc's variables: both cases are run here,
on the service process's own minor-fault counter.
"""

from __future__ import annotations

import os
import resource

import pytest

ROWS = 1100  # 36 MB of float32 spectra: above glibc's largest automatic mmap threshold
PAGES = ROWS * 2 * 4076 * 4 // resource.getpagesize()


def minor_faults(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])


def faults_per_request(svc, n: int = 4) -> float:
    for _ in range(3):  # the first bodies grow the heaps (and each batch thread's); paid once
        assert svc.infer_rows(ROWS).status_code == 200
    before = minor_faults(svc.proc.pid)
    for _ in range(n):
        assert svc.infer_rows(ROWS).status_code == 200
    return (minor_faults(svc.proc.pid) - before) / n


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_large_upload_reuses_memory_instead_of_faulting_it_in(api_repo, start_service):
    svc = start_service(api_repo)
    # typically ~13 a request; once, in CI, ~2,900 (a heap still growing). Without the change
    # each body is fresh pages, and more (the second test: ~48,000)
    assert faults_per_request(svc) < PAGES


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_the_operators_own_allocator_settings_are_left_alone(api_repo, start_service,
                                                              monkeypatch):
    # glibc's own default, set explicitly: the service must not override it, and then each
    # body is fresh pages again (which is also what shows the first test's point)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    svc = start_service(api_repo)
    assert faults_per_request(svc) > PAGES / 2
