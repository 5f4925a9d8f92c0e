"""The service's JSON → what an astronomer works with: an astropy Table with units, or
dataclasses holding numpy arrays and Quantities.

The classification table has exactly the columns, names, units and descriptions of
``specula classify``'s FITS/ECSV/VOTable output (``service.inference.tables.column_specs``):
one column per class and label probability, ``z``, ``z_sigma``, ``z_warning``, ``quality``
and ``quality_flags``, ids, and ``status``/``error_code``/``error_detail`` for a file or a
spectrum the service could not read, in its place. The label layout those columns need comes
from the model's metadata (``/v2/models/{name}/versions/{v}``), not from guessing at names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import MaskedColumn, Table

from service.inference.postprocess import LabelMap
from service.inference.tables import Spec, column_specs


def label_map(metadata: dict[str, Any]) -> LabelMap:
    """The model metadata's ``parameters.labels``/``top_classes`` → LabelMap (what
    ``LabelMap.from_manifest`` builds on the server)."""
    p = metadata["parameters"]
    labels = p["labels"]
    tops = p.get("top_classes") or sorted({lab["top"] for lab in labels})
    membership = np.zeros((len(labels), len(tops)), np.float32)
    for k, lab in enumerate(labels):
        membership[k, tops.index(lab["top"])] = 1.0
    return LabelMap([lab["name"] for lab in labels], [lab.get("subtype") for lab in labels],
                    tops, membership)


def _column(spec: Spec, rows: list[dict[str, Any]]) -> MaskedColumn:
    values = [spec.get(r) for r in rows]
    mask = [v is None for v in values]
    if spec.dtype == "U":
        data = np.array(["" if v is None else str(v) for v in values], dtype=str)
    else:
        data = np.array([0 if v is None else v for v in values], dtype=spec.dtype)
    return MaskedColumn(data, name=spec.name, mask=mask, unit=spec.unit,
                        description=spec.description)


def classification_table(body: dict[str, Any], labels: LabelMap, url: str) -> Table:
    """``/v1/spectra:classify``'s body → one row per result, in the service's order."""
    rows = body["results"]
    table = Table([_column(s, rows) for s in column_specs(labels)])
    table.meta.update({"MODEL": body["model"], "MODELVER": body["version"],
                       "ORIGIN": "specula client", "SERVICE": url})
    return table


def errors_of(table: Table) -> list[dict[str, str]]:
    """The failed rows of a classification table as ``{"source", "object_id", "code",
    "detail"}``."""
    return [{"source": str(r["source"]), "object_id": str(r["object_id"] or ""),
             "code": str(r["error_code"]), "detail": str(r["error_detail"])}
            for r in table if r["status"] == "error"]


@dataclass(frozen=True, slots=True)
class SpectrumSaliency:
    """One spectrum's saliency map on the model's wavelength grid: ``flux`` is the map of the
    flux channel, ``weight`` of the inverse-variance channel (docs/saliency.md); ``prediction``
    is what the model said, ``explained`` which output the map explains. A spectrum the service
    could not read has ``error`` (``{"code", "detail"}``) and no map."""

    object_id: str
    source: str
    model: str
    version: int
    wavelength: u.Quantity  # Å, vacuum: the model grid
    flux: np.ndarray | None = None
    weight: np.ndarray | None = None
    prediction: dict[str, Any] = field(default_factory=dict)
    explained: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def saliency_results(body: dict[str, Any]) -> list[SpectrumSaliency]:
    wave = np.asarray(body["wavelength"], np.float64) * u.AA
    out = []
    for r in body["results"]:
        common = {"object_id": r.get("object_id", ""), "source": r["source"],
                  "model": body["model"], "version": body["version"], "wavelength": wave}
        if "error" in r:
            out.append(SpectrumSaliency(**common, error=r["error"]))
            continue
        out.append(SpectrumSaliency(
            **common, flux=np.asarray(r["saliency"]["flux"], np.float32),
            weight=np.asarray(r["saliency"]["weight"], np.float32),
            prediction=r["prediction"], explained=r["explained"], method=r["method"],
            warnings=list(r.get("warnings", []))))
    return out


@dataclass(frozen=True, slots=True)
class ParameterEstimate:
    """One astrophysical parameter: posterior mean and 1σ in ``unit`` (a plain string, since
    some are logarithmic, e.g. ``log10(K)``), the training prior, and the value the file
    itself carries (a simulation's truth), when it does."""

    name: str
    mean: float
    sigma: float
    unit: str
    prior: tuple[float, float]
    description: str = ""
    file_value: float | None = None


@dataclass(frozen=True, slots=True)
class LightconeResult:
    """``/v1/lightcones:infer``'s answer: one estimate per parameter, and how the cube was
    read (``format``, its ``shape``, the resampling ``notes``)."""

    model: str
    version: int
    parameters: dict[str, ParameterEstimate]
    format: str | None = None
    shape: tuple[int, ...] | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def table(self) -> Table:
        """One row per parameter: name, mean, sigma, unit, prior, the file's own value."""
        ps = list(self.parameters.values())
        nan = float("nan")
        t = Table({"name": [p.name for p in ps], "mean": [p.mean for p in ps],
                   "sigma": [p.sigma for p in ps], "unit": [p.unit for p in ps],
                   "prior_low": [p.prior[0] for p in ps], "prior_high": [p.prior[1] for p in ps],
                   "file_value": [nan if p.file_value is None else p.file_value for p in ps],
                   "description": [p.description for p in ps]})
        t["sigma"].description = "1σ posterior standard deviation, in `unit`"
        t["file_value"].description = "the value the file carries (NaN: none)"
        t.meta.update({"MODEL": self.model, "MODELVER": self.version})
        return t


def lightcone_result(body: dict[str, Any]) -> LightconeResult:
    truth = body.get("file_parameters") or {}
    params = {name: ParameterEstimate(name, p["mean"], p["sigma"], p.get("unit", ""),
                                      tuple(p["prior"]), p.get("description", ""),
                                      truth.get(name))
              for name, p in body["parameters"].items()}
    shape = tuple(body["shape"]) if body.get("shape") else None
    return LightconeResult(body["model"], body["version"], params, body.get("format"), shape,
                           list(body.get("notes", [])), list(body.get("warnings", [])))
