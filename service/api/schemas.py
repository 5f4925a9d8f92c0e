"""Response schemas, named by role. They document the API (OpenAPI at /openapi.json); the
hot routes serialise plain dicts with orjson rather than validating thousands of objects."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str
    code: str
    source: str | None = None


class ClassifiedSpectrum(BaseModel):
    object_id: str
    source: str
    format: str | None
    model: str
    version: int
    class_: str = Field(alias="class")
    class_probability: float
    subtype: str | None
    label: str
    label_probability: float
    class_probabilities: dict[str, float]
    probabilities: dict[str, float]
    entropy: float
    epistemic: float
    z: float
    z_sigma: float
    warnings: list[str]



class SpectrumFailure(BaseModel):
    """A spectrum of a multi-spectrum file that could not be classified (a dead fibre)."""

    object_id: str
    source: str
    error: dict[str, str]


class ClassifyResponse(BaseModel):
    model: str
    version: int
    results: list[ClassifiedSpectrum | SpectrumFailure]


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
