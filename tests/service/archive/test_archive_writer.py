"""Output parts are atomic: only closed, renamed parts are visible; leftovers are cleaned."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.archive.writer import OutputDirectory, OutputError, PartWriter

SCHEMA = pa.schema([pa.field("file", pa.string()), pa.field("input_key", pa.int64())])
JOB = {"model": {"name": "m", "version": 1, "sha256": "ab"}}


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({"file": [f"f{i}" for i in range(start, start + n)],
                     "input_key": list(range(start, start + n))}, schema=SCHEMA)


def test_uncommitted_rows_are_invisible_and_a_killed_part_is_removed(tmp_path):
    out = OutputDirectory(tmp_path / "r.parquet", JOB)
    w = PartWriter(out, SCHEMA, part_rows=10, row_group_rows=4)
    w.write(rows(5))  # one row group flushed into the hidden temp part
    assert list(out.path.glob(".part-*.tmp")) and not list(out.path.glob("part-*"))
    assert pq.read_table(out.path).num_rows == 0  # readers skip '.'/'_' names
    w.write(rows(6, 5))
    w.commit_if_due()  # 11 rows >= part_rows: committed
    w.write(rows(3, 11))
    w._flush()  # the run is then killed with this part open
    out.close()
    committed = pq.read_table(tmp_path / "r.parquet")
    assert committed.column("input_key").to_pylist() == list(range(11))
    assert pq.ParquetFile(next((tmp_path / "r.parquet").glob("part-*"))).num_row_groups == 2  # 5 rows, then 6

    again = OutputDirectory(tmp_path / "r.parquet", JOB)  # the next run
    assert not list(again.path.glob(".part-*.tmp"))
    w2 = PartWriter(again, SCHEMA)
    w2.write(rows(3, 11))
    w2.commit()
    assert sorted(p.name for p in again.path.glob("part-*")) == [
        "part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(again.path).column("input_key").to_pylist() == list(range(14))
    again.close()


def test_one_writer_and_one_model_per_directory(tmp_path):
    first = OutputDirectory(tmp_path / "r.parquet", JOB)
    with pytest.raises(OutputError, match="another run"):
        OutputDirectory(tmp_path / "r.parquet", JOB)
    first.close()
    with pytest.raises(OutputError, match="holds results of"):
        OutputDirectory(tmp_path / "r.parquet", {"model": {"name": "m", "version": 2}})
