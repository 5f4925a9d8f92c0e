"""``specula classify`` results → an astropy Table with units: FITS, ECSV or VOTable.

Astronomers open results in TOPCAT, astropy or a FITS viewer, not as JSON lines. A table has
one row per ``encode_response`` dict (a spectrum, a failed spectrum, or a file that could not
be read: ``status`` says which), one scalar column per quantity (probabilities by class and
by label, named as in ``columns.py`` and in the archive's Parquet), units and a description
on every column, and the file's own pipeline CLASS/Z beside the prediction. Absent values
(a failed row's class, a model without ``z_warning``, a file without SPECOBJ) are masked:
null in ECSV and VOTable, NaN / ``TNULL`` / empty string in FITS.

The file is written whole to a temp file next to it and renamed, so a reader (or a crash)
never sees half a table.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import MaskedColumn, Table

from service.spectra.zwarning import Z_WARNING_TEXT

from .columns import probability_columns
from .postprocess import LabelMap
from .quality import BITS_TEXT
from .repository import ModelVersion

# output file extension → astropy format name
FORMATS = {".fits": "fits", ".fit": "fits", ".ecsv": "ascii.ecsv", ".vot": "votable",
           ".xml": "votable"}
ONE = u.dimensionless_unscaled


def table_format(path: str) -> str | None:
    """The astropy format a path's extension asks for, or None (not a table output)."""
    return FORMATS.get(Path(path).suffix.lower())


def _error(field: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r["error"].get(field) if "error" in r else None


def _joined(field: str, sep: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: sep.join(r[field]) if r.get(field) is not None else None


@dataclass(frozen=True, slots=True)
class Spec:
    """One output column: its name, numpy dtype, unit, description and how to get a value
    from a result dict (None = masked)."""

    name: str
    dtype: str
    description: str
    get: Callable[[dict[str, Any]], Any]
    unit: u.UnitBase | None = None


def _field(name: str, dtype: str, description: str, unit: u.UnitBase | None = None) -> Spec:
    return Spec(name, dtype, description, lambda r: r.get(name), unit)


def column_specs(labels: LabelMap) -> list[Spec]:
    probs = [Spec(c.name, "f8" if c.kind == "class" else "f4", c.description,
                  lambda r, c=c: c.value(r) if "error" not in r else None, ONE)
             for c in probability_columns(labels)]
    return [
        _field("source", "U", "the input file"),
        _field("object_id", "U", "the spectrum's identifier (PLATE-MJD-FIBER, TARGETID, ...)"),
        _field("format", "U", "the reader that identified the file"),
        Spec("status", "U", "ok, or error (error_code says why)",
             lambda r: "error" if "error" in r else "ok"),
        Spec("error_code", "U", "a service.spectra error code when status is error",
             _error("code")),
        Spec("error_detail", "U", "what went wrong, for a person", _error("detail")),
        _field("class", "U", "predicted top class"),
        _field("class_probability", "f8", "probability of the predicted class (sum of its "
               "labels)", ONE),
        _field("subtype", "U", "most probable subtype inside the predicted class"),
        _field("label", "U", "most probable label inside the predicted class"),
        _field("label_probability", "f4", "probability of that label", ONE),
        *probs,
        _field("entropy", "f4", "predictive entropy of the label distribution, in nats", ONE),
        _field("epistemic", "f4", "model (epistemic) part of the entropy: mutual information "
               "between prediction and ensemble member, in nats", ONE),
        _field("z", "f4", "predicted redshift", ONE),
        _field("z_sigma", "f4", "1 sigma redshift error", ONE),
        _field("z_warning", "i4", f"template-fit warning bits ({Z_WARNING_TEXT}; 0 none); null "
               "for models without a template fit"),
        Spec("z_warnings", "U", "names of the set z_warning bits, comma-separated",
             _joined("z_warnings", ",")),
        _field("z_rchi2", "f4", "chi2 per degree of freedom of the template fit behind z "
               "(-1: no fit)", ONE),
        _field("quality", "i4", f"quality bits ({BITS_TEXT}; 0 none)"),
        Spec("quality_flags", "U", "names of the set quality bits, comma-separated",
             _joined("quality_flags", ",")),
        _field("file_class", "U", "the file's own pipeline class (SDSS SPECOBJ CLASS)"),
        _field("file_subclass", "U", "the file's own pipeline subclass (SPECOBJ SUBCLASS)"),
        _field("file_z", "f8", "the file's own pipeline redshift (SPECOBJ Z)", ONE),
        _field("file_zwarning", "i8", "the file's own pipeline ZWARNING bits"),
        Spec("warnings", "U", "warnings about the input, '; '-separated",
             _joined("warnings", "; ")),
        _field("model", "U", "model name"),
        _field("version", "i4", "model version"),
    ]


def _column(spec: Spec, values: list[Any]) -> MaskedColumn:
    mask = [v is None for v in values]
    fill = "" if spec.dtype == "U" else 0
    data = np.array([fill if v is None else v for v in values],
                    dtype=str if spec.dtype == "U" else spec.dtype)
    return MaskedColumn(data, name=spec.name, mask=mask, unit=spec.unit,
                        description=spec.description)


def results_table(results: list[dict[str, Any]], model: ModelVersion) -> Table:
    """``encode_response`` dicts (and offline error lines) → one Table, rows in order."""
    m = model.manifest
    specs = column_specs(LabelMap.from_manifest(m))
    table = Table([_column(s, [s.get(r) for r in results]) for s in specs])
    table.meta.update({"MODEL": m.name, "MODELVER": m.version, "MODELSHA": m.sha256.lower(),
                       "ORIGIN": "specula classify"})
    return table


def _ascii(table: Table) -> Table:
    """FITS strings are ASCII: anything else (a path with an accent) backslash-escaped."""
    out = table.copy(copy_data=False)
    for name in out.colnames:
        col = out[name]
        if col.dtype.kind == "U" and any(not str(v).isascii() for v in col.data):
            out[name] = MaskedColumn([str(v).encode("ascii", "backslashreplace").decode()
                                      for v in col.data], mask=col.mask, name=name,
                                     description=col.description)
    return out


def write_table(table: Table, path: str) -> None:
    """Write in the format the extension names, atomically (temp file, fsync, rename)."""
    fmt = table_format(path)
    if fmt is None:
        raise ValueError(f"{path}: not a table extension ({', '.join(FORMATS)})")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        (_ascii(table) if fmt == "fits" else table).write(tmp, format=fmt, overwrite=True)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
