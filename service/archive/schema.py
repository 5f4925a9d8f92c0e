"""The Parquet schema of an archive run: one row per spectrum, or per file that failed.

Built from ``SpectrumPipeline.encode_response``'s dicts (the API's own fields), so a row says
what the API would have said. Model outputs are float32 in ONNX Runtime and stored as float32
(lossless); ``class_probability`` and ``class_probabilities`` are float64 sums of them, as in
the API. ``probabilities`` follows the label order stored in the schema metadata
(``specula.labels``), ``class_probabilities`` the ``specula.top_classes`` order. The same
numbers are also flat columns, one per class and label (``p_STAR``, ``p_STAR_A``: named by
``service.inference.columns``, as in the FITS/ECSV/VOTable outputs), so a query needs no list
indexing; ``schema_for`` adds them, since they depend on the model. ``file_*`` hold the
input file's own pipeline answer (SDSS SPECOBJ CLASS/SUBCLASS/Z/ZWARNING) when it has one.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from service.inference.columns import ProbabilityColumn, probability_columns, probability_values
from service.inference.pipeline import FILE_FIELDS
from service.inference.postprocess import LabelMap
from service.inference.repository import ModelVersion

from .inputs import InputFile

SCHEMA = pa.schema([
    pa.field("file", pa.string(), nullable=False),
    pa.field("file_size", pa.int64()),
    pa.field("file_mtime_ns", pa.int64()),
    pa.field("input_key", pa.int64(), nullable=False),  # resume key (resume.input_key)
    pa.field("spectrum_index", pa.int32()),  # position in the file; null when the file failed
    pa.field("object_id", pa.string()),
    pa.field("format", pa.string()),
    pa.field("status", pa.string(), nullable=False),  # "ok" | "error"
    pa.field("error_code", pa.string()),  # a service.spectra error code when status="error"
    pa.field("error_detail", pa.string()),
    pa.field("class", pa.string()),
    pa.field("class_probability", pa.float64()),
    pa.field("subtype", pa.string()),
    pa.field("label", pa.string()),
    pa.field("label_probability", pa.float32()),
    pa.field("class_probabilities", pa.list_(pa.float64())),
    pa.field("probabilities", pa.list_(pa.float32())),
    pa.field("entropy", pa.float32()),
    pa.field("epistemic", pa.float32()),
    pa.field("z", pa.float32()),
    pa.field("z_sigma", pa.float32()),
    pa.field("z_warning", pa.int32()),  # null for models without an in-graph template fit
    pa.field("z_warnings", pa.list_(pa.string())),  # names of the set z_warning bits
    pa.field("z_rchi2", pa.float32()),  # null for models without an in-graph template fit
    pa.field("quality", pa.int32()),  # quality bits (service.inference.quality.FLAGS)
    pa.field("quality_flags", pa.list_(pa.string())),  # names of the set quality bits
    pa.field("warnings", pa.list_(pa.string())),
    pa.field("file_class", pa.string()),  # the file's own pipeline answer, null when absent
    pa.field("file_subclass", pa.string()),
    pa.field("file_z", pa.float64()),
    pa.field("file_zwarning", pa.int64()),
    pa.field("model", pa.string(), nullable=False),
    pa.field("model_version", pa.int32(), nullable=False),
    pa.field("model_sha256", pa.string(), nullable=False),
])




def model_columns(model: ModelVersion) -> list[ProbabilityColumn]:
    return probability_columns(LabelMap.from_manifest(model.manifest))


def schema_for(model: ModelVersion) -> pa.Schema:
    """SCHEMA plus one column per class and label probability (after ``probabilities``) and
    the model's label order, so ``probabilities`` can be read by name."""
    m = model.manifest
    cols = model_columns(model)
    fields = [pa.field(c.name, pa.float64() if c.kind == "class" else pa.float32())
              for c in cols]
    at = SCHEMA.get_field_index("probabilities") + 1
    schema = pa.schema(list(SCHEMA)[:at] + fields + list(SCHEMA)[at:])
    return schema.with_metadata({
        "specula.labels": json.dumps([lab.name for lab in m.labels]),
        "specula.top_classes": json.dumps(list(m.top_classes)),
        "specula.probability_columns": json.dumps({c.name: c.key for c in cols}),
        "specula.model": json.dumps({"name": m.name, "version": m.version,
                                     "sha256": m.sha256.lower()}),
    })


def rows_from_results(entry: InputFile, key: int, results: list[dict[str, Any]],
                      model: ModelVersion) -> list[dict[str, Any]]:
    """``encode_response`` dicts of one file → archive rows (a file-level error has no index)."""
    m = model.manifest
    cols = model_columns(model)
    base = {"file": entry.path, "file_size": entry.size, "file_mtime_ns": entry.mtime_ns,
            "input_key": key, "model": m.name, "model_version": m.version,
            "model_sha256": m.sha256.lower()}
    rows = []
    for i, r in enumerate(results):
        row = {**base, "object_id": r.get("object_id"), "format": r.get("format")}
        if "error" in r:
            row.update(status="error", error_code=r["error"]["code"],
                       error_detail=r["error"]["detail"],
                       spectrum_index=i if "object_id" in r else None)
        else:
            row.update(status="ok", spectrum_index=i, warnings=r["warnings"],
                       probabilities=list(r["probabilities"].values()),
                       class_probabilities=list(r["class_probabilities"].values()),
                       **{k: r[k] for k in ("class", "class_probability", "subtype", "label",
                                            "label_probability", "entropy", "epistemic", "z",
                                            "z_sigma")},
                       **probability_values(r, cols),
                       **{k: r.get(k) for k in ("z_warning", "z_warnings", "z_rchi2",
                                                "quality", "quality_flags")},
                       **{k: r.get(k) for k in FILE_FIELDS})
        rows.append(row)
    return rows


def table_from_rows(rows: list[dict[str, Any]], schema: pa.Schema = SCHEMA) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)
