"""The Ray Data engine, for real on a local Ray (2 CPUs, small object store): its rows equal
the single-machine engine's exactly, and it resumes from the same output."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from service.archive import ArchiveJob
from service.archive.classify import main as classify
from service.archive.local import run_local
from tests.support.archive_files import N_GOOD

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=96 * 1024 * 1024, include_dashboard=False,
             logging_level="WARNING")
    yield
    ray.shutdown()


def read_sorted(path):
    return pq.read_table(path).sort_by([("file", "ascending"), ("spectrum_index", "ascending")])


def test_ray_engine_agrees_exactly_with_local_engine(local_ray, archive, archive_models,
                                                      tmp_path):
    root, bad = archive
    local = ArchiveJob([str(root)], str(tmp_path / "local.parquet"),
                       repository=str(archive_models), files_per_unit=8, workers=0,
                       progress=False)
    run_local(local)
    out = tmp_path / "ray.parquet"
    argv = [str(root), "--engine", "ray", "--output", str(out), "--repository",
            str(archive_models), "--files-per-unit", "8", "--quiet"]
    assert classify(argv) == 1  # the broken files are error rows, the run completes
    by_ray = read_sorted(out)
    assert by_ray.num_rows == N_GOOD + len(bad)
    assert by_ray.equals(read_sorted(local.output))  # every column, every bit
    assert by_ray.schema.metadata == pq.read_schema(next(local.output_path().glob("part-*"))
                                                    ).metadata
    assert (out / "_SUCCESS").exists()

    # a rerun finds everything done and writes nothing, and still exits 1: the broken files
    # it skipped are unchanged, so still failed (docs/archive.md, "Exit status")
    assert classify(argv) == 1
    assert read_sorted(out).equals(by_ray)
