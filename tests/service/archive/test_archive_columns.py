"""The archive's Parquet has the flat columns of the table outputs: one per class and label
probability, the file's own SPECOBJ CLASS/Z, the template-fit fields; the list columns stay."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from service.archive.classify import main as classify


def test_flat_probability_and_file_columns_match_classify_json(archive_models, sdss_spec_path,
                                                               tmp_path):
    jsonl = tmp_path / "out.jsonl"
    assert classify([str(sdss_spec_path), "--repository", str(archive_models), "--out",
                     str(jsonl), "--quiet"]) == 0
    (ref,) = map(json.loads, jsonl.read_text().splitlines())
    out = tmp_path / "r.parquet"
    assert classify([str(sdss_spec_path), "--repository", str(archive_models), "--output",
                     str(out), "--workers", "1", "--quiet"]) == 0
    table = pq.read_table(out)
    (row,) = table.to_pylist()
    columns = json.loads(table.schema.metadata[b"specula.probability_columns"])

    labels = json.loads(table.schema.metadata[b"specula.labels"])
    assert row["probabilities"] == list(ref["probabilities"].values()) and labels == list(
        ref["probabilities"])  # the list columns are kept
    assert {"p_GALAXY": "GALAXY", "p_STAR": "STAR", "p_STAR_A": "STAR:A"}.items() <= \
        columns.items()
    for name, key in columns.items():
        kind = "class_probabilities" if key in ref["class_probabilities"] else "probabilities"
        assert row[name] == ref[kind][key], name
    assert table.schema.field("p_STAR").type == "double"
    assert table.schema.field("p_STAR_A").type == "float"

    assert (row["file_class"], row["file_subclass"]) == ("STAR", "A0")
    assert row["file_z"] == ref["file_z"] and row["file_zwarning"] == ref["file_zwarning"] == 0
    assert row["quality"] == ref["quality"] and row["quality_flags"] == ref["quality_flags"]
    assert table.schema.field("quality").type == "int32"
    for k in ("z_warning", "z_warnings", "z_rchi2"):  # null when the model has no fit
        assert row[k] == ref.get(k), k
