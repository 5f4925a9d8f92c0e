"""Response schemas, named by role. They document the API (OpenAPI at /openapi.json); the
hot routes serialise plain dicts with orjson rather than validating thousands of objects."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from service.inference.quality import BITS_TEXT
from service.spectra.zwarning import Z_WARNING_TEXT

from .examples import ERRORS as ERROR_EXAMPLES


class ErrorBody(BaseModel):
    """Every error the service answers (service/api/errors.py): ``source`` only when the
    error is about one uploaded file."""

    error: str = Field(description="what went wrong, for a person")
    code: str = Field(description="machine-readable: bad_request, model_not_found, ...")
    source: str | SkipJsonSchema[None] = Field(None, description="the file it is about")


# What each error status means here; a route declares the ones it can answer (error_responses)
ERROR_STATUSES: dict[int, str] = {
    400: "A malformed parameter, header or body (bad_request, bad_tensor, bad_shape, ...); "
         "also a failed query or path validation.",
    401: "No valid credential: the API key when SPECULA_API_KEYS is set, or the admin token.",
    403: "Admin endpoints are disabled (no SPECULA_ADMIN_TOKEN).",
    404: "No such model or version (model_not_found).",
    409: "The request conflicts with the model: no saliency graph (saliency_unavailable), or "
         "a reload that failed (the previous versions keep serving).",
    411: "Content-Length is required (cubes are sized before they are read).",
    413: "The body, a file or its decoded size passes a limit (too_large, decompression_bomb).",
    415: "No reader recognises the upload (unknown_format).",
    422: "A readable upload whose content cannot be used (e.g. a spectrum that fails its "
         "checks).",
    429: "The model's queue is full (SPECULA_QUEUE_FULL_STATUS); retry after Retry-After.",
    503: "Not now: shutting down, uploads in flight fill the budget, a full queue with "
         "SPECULA_QUEUE_FULL_STATUS=503, or the model cannot run.",
    504: "The deadline (SPECULA_DEADLINE_HEADER or the OIP timeout parameter) passed.",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                               "schema": {"type": "integer"}}}


def error_responses(*statuses: int, examples: dict[int, dict[str, Any]] | None = None
                    ) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status it can answer, with the one error body and
    an example of it (``examples`` replaces the route's own), so a generated client knows
    every status and its shape."""
    chosen = {**ERROR_EXAMPLES, **(examples or {})}
    return {s: {"model": ErrorBody, "description": ERROR_STATUSES[s],
                "content": {"application/json": {"example": chosen[s]}},
                **({"headers": RETRY_AFTER} if s in (429, 503) else {})} for s in statuses}


def ok(named: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a JSON 200 with its ``examples`` (service/api/examples.py);
    FastAPI merges it with the route's response model."""
    return {200: {"content": {"application/json": {"examples": named}}}}


def json_examples(responses: dict[int | str, dict[str, Any]], named: dict[str, Any]
                  ) -> dict[str, Any]:
    """The 200 of ``responses`` (e.g. media.MAPS_200) with the ``examples`` of its JSON
    answer (service/api/examples.py): each media type kept, none of the dicts changed."""
    ok = responses[200]
    content = {**ok["content"], "application/json": {**ok["content"]["application/json"],
                                                     "examples": named}}
    return {**ok, "content": content}


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI schema without FastAPI's automatic 422 ``HTTPValidationError``: a
    failed validation is answered 400 with the error body (errors.failure_of), which every
    route declares, so that 422 was a response the server never gives."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        for path in schema["paths"].values():
            for op in path.values():
                if "HTTPValidationError" in str(op.get("responses", {}).get("422")):
                    del op["responses"]["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


class ClassifiedSpectrum(BaseModel):
    """One classified spectrum. Probabilities are calibrated, in [0, 1]; uncertainties are
    in nats (natural-log units of information); redshifts are dimensionless."""

    object_id: str = Field(description="the spectrum's id in its file (e.g. plate-mjd-fiber)")
    source: str = Field(description="the uploaded file it came from")
    format: str | None = Field(description="the reader that read the file, e.g. sdss-spec")
    model: str
    version: int
    class_: str = Field(alias="class", description="the most probable class: GALAXY, QSO or "
                        "STAR")
    class_probability: float = Field(description="probability of `class`: the sum of its "
                                     "labels' probabilities")
    subtype: str | None = Field(description="the most probable subtype inside `class`")
    label: str = Field(description="the most probable label inside `class`, e.g. STAR:A")
    label_probability: float = Field(description="probability of `label`")
    class_probabilities: dict[str, float] = Field(description="probability of each class")
    probabilities: dict[str, float] = Field(description="probability of each label")
    entropy: float = Field(description="predictive entropy of the label distribution, in nats "
                           "(total uncertainty)")
    epistemic: float = Field(description="the epistemic part of `entropy`: mutual information "
                             "between label and ensemble member, in nats")
    z: float = Field(description="redshift (dimensionless)")
    z_sigma: float = Field(description="1σ (one standard deviation) total error of z")
    z_warning: int | None = Field(
        None, description="models with an in-graph template fit: bitmask in the spirit of "
        f"SDSS ZWARNING ({Z_WARNING_TEXT}); 0 = none")
    z_warnings: list[str] | None = Field(None, description="the names of the set z_warning bits")
    z_rchi2: float | None = Field(None, description="χ²/dof of the template fit behind z "
                                  "(−1: no fit)")
    quality: int | None = Field(
        None, description=f"quality bitmask in the spirit of SDSS/DESI ZWARNING ({BITS_TEXT}); "
        "0 = none raised. A flagged spectrum needs template fitting or a person "
        "(docs/service.md, Quality flags)")
    quality_flags: list[str] | None = Field(None, description="the names of the set "
                                            "`quality` bits")
    file_class: str | None = Field(None, description="the file's own pipeline class (SDSS "
                                   "SPECOBJ CLASS), when the file carries one")
    file_subclass: str | None = Field(None, description="the file's pipeline SUBCLASS")
    file_z: float | None = Field(None, description="the file's pipeline redshift (SPECOBJ Z)")
    file_zwarning: int | None = Field(None, description="the file's pipeline ZWARNING bits")
    warnings: list[str] = Field(description="quality notes, e.g. the share of masked grid "
                                "pixels")


class SpectrumFailure(BaseModel):
    """A spectrum of a multi-spectrum file that could not be classified (a dead fibre)."""

    object_id: str
    source: str
    error: dict[str, str]


class UploadFailure(BaseModel):
    """A file of a request that could not be read at all, in its place among the results
    (the buffered response and each ``?stream=true`` line alike): it has no spectrum, so no
    ``object_id``; ``error`` holds ``code``, ``detail`` and ``source``. When every file of a
    request fails, the request is answered with the first one's 4xx instead."""

    source: str
    error: dict[str, str]


class ClassifyResponse(BaseModel):
    model: str
    version: int
    results: list[ClassifiedSpectrum | SpectrumFailure | UploadFailure]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class RepositoryEntry(BaseModel):
    name: str
    version: str
    state: str
    reason: str = ""
