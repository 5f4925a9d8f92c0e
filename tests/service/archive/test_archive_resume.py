"""Kill a run mid-way (SIGINT like Ctrl-C, or SIGKILL), rerun: nothing lost, nothing twice,
and the rows equal those of a run that was never interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from service.archive.local import run_local
from tests.support.archive_files import write_archive
from tests.support.archive_job_process import job

REPO = Path(__file__).resolve().parents[3]
N_FILES = 48


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "in"
    write_archive(root, N_FILES - 4)
    return root


@pytest.fixture(scope="module")
def reference(big_archive, archive_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "r.parquet"
    run_local(job(str(big_archive), str(out), str(archive_models), inline=True))
    return read_sorted(out)


def read_sorted(path):
    return pq.read_table(path).sort_by([("file", "ascending"), ("spectrum_index", "ascending")])


def children(pid: int) -> set[int]:
    """The processes ``pid`` started (any of its threads)."""
    return {int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()}


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for_parts(out: Path, proc: subprocess.Popen, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob("part-*.parquet"))) < n:
        assert proc.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline, "no part committed in time"
        time.sleep(0.005)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_run_resumes_without_loss_or_duplicates(sig, big_archive, archive_models,
                                                       reference, tmp_path):
    out = tmp_path / "r.parquet"
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.archive_job_process",
                             str(big_archive), str(out), str(archive_models)], cwd=REPO)
    try:
        wait_for_parts(out, proc, 3)
        workers = children(proc.pid)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert workers  # the decode worker (and multiprocessing's resource tracker)
    deadline = time.monotonic() + 10
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(alive, workers)), "a worker outlived its killed job"
    partial = pq.read_table(out)  # whatever was committed is valid Parquet
    assert 3 <= len(set(partial.column("file").to_pylist())) < N_FILES
    assert not (out / "_SUCCESS").exists()

    summary = run_local(job(str(big_archive), str(out), str(archive_models), inline=True))
    assert not summary.interrupted
    assert summary.files_skipped + summary.files_done == N_FILES
    assert summary.files_skipped >= 3
    assert not list(out.glob(".part-*.tmp")) and (out / "_SUCCESS").exists()
    resumed = read_sorted(out)
    keys = list(zip(resumed.column("file").to_pylist(),
                    resumed.column("spectrum_index").to_pylist()))
    assert len(keys) == len(set(keys))  # nothing twice
    assert resumed.equals(reference)  # nothing lost, nothing changed
