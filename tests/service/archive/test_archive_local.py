"""The single-machine archive job: same answers as `specula classify`, bad files as rows."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from service.archive import ArchiveJob
from service.archive.classify import main as classify
from service.archive.local import run_local
from tests.support.archive_files import N_GOOD

FLOATS = ("class_probability", "label_probability", "entropy", "epistemic", "z", "z_sigma")


def read_sorted(path):
    return pq.read_table(path).sort_by([("file", "ascending"), ("spectrum_index", "ascending")])


@pytest.fixture(scope="module")
def jsonl(archive, archive_models, tmp_path_factory) -> dict[str, dict]:
    """`specula classify` (JSON lines) over every file of the archive, by file."""
    root, _ = archive
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    out = tmp_path_factory.mktemp("jsonl") / "out.jsonl"
    classify([*files, "--repository", str(archive_models), "--out", str(out), "--quiet"])
    return {d["source"]: d for d in map(json.loads, out.read_text().splitlines())}


def test_results_equal_offline_classify_and_bad_files_are_error_rows(archive, archive_models,
                                                                     jsonl, tmp_path):
    root, bad = archive
    out = tmp_path / "results.parquet"
    rc = classify([str(root), "--output", str(out), "--repository", str(archive_models),
                   "--files-per-unit", "1", "--workers", "1", "--quiet"])
    assert rc == 1  # some files failed
    table = read_sorted(out)
    assert table.num_rows == N_GOOD + len(bad) == len(jsonl)
    assert json.loads(table.schema.metadata[b"specula.labels"])
    for row in table.to_pylist():
        ref = jsonl[row["file"]]
        if row["file"] in bad:
            assert row["status"] == "error" and row["error_code"] == bad[row["file"]]
            assert row["error_code"] == ref["error"]["code"] and row["class"] is None
            continue
        assert row["status"] == "ok" and row["error_code"] is None
        for k in ("object_id", "format", "class", "subtype", "label", "warnings"):
            assert row[k] == ref[k], k
        # one file per unit = the same ORT batches as classify (one file each): bit-equal
        assert row["probabilities"] == list(ref["probabilities"].values())
        assert row["class_probabilities"] == list(ref["class_probabilities"].values())
        assert all(row[k] == ref[k] for k in FLOATS)
        assert (row["model"], row["model_version"]) == (ref["model"], ref["version"])
    assert (out / "_SUCCESS").exists()
    assert json.loads((out / "_SUCCESS").read_text())["spectra_ok"] == N_GOOD


def test_default_units_batch_across_files_and_agree_with_classify(archive, archive_models,
                                                                  jsonl, tmp_path):
    root, bad = archive
    job = ArchiveJob([str(root)], str(tmp_path / "r.parquet"), repository=str(archive_models),
                     files_per_unit=16, workers=0, progress=False)
    summary = run_local(job)
    assert summary.spectra_ok == N_GOOD and summary.files_failed == 3  # + one spectrum error
    assert dict(summary.errors) == {"corrupt_file": 1, "empty_file": 1, "no_grid_overlap": 1,
                                    "unknown_format": 1}
    table = read_sorted(job.output)
    ok = table.filter(pc.equal(table.column("status"), "ok"))
    for row in ok.to_pylist():
        ref = jsonl[row["file"]]
        assert row["label"] == ref["label"]
        # batches of 16 rows vs 1: ONNX Runtime may differ in the last float32 bit
        assert row["probabilities"] == pytest.approx(list(ref["probabilities"].values()),
                                                     rel=1e-5, abs=1e-6)
        assert row["z"] == pytest.approx(ref["z"], rel=1e-5, abs=1e-6)

    parts = sorted(p.name for p in job.output_path().glob("part-*"))
    again = run_local(job)  # everything done: nothing written, nothing duplicated
    assert (again.files_done, again.files_skipped) == (0, N_GOOD + len(bad))
    assert sorted(p.name for p in job.output_path().glob("part-*")) == parts
    assert read_sorted(job.output).equals(table)
