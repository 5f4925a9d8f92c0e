"""The model repository: find, verify and load models laid out the way Triton expects.

``<root>/<name>/<int version>/model.onnx`` + ``manifest.json`` (contract in models/README.md).
This module only finds, verifies and describes; it runs nothing. A version is refused when its
sha256 does not match the bytes on disk or its ``preprocess_version`` differs from the one the
service would feed it — a silently mismatched preprocessing is the worst failure a classifier
can have, because every answer stays plausible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from service.io.manifest import MANIFEST, manifest_kind
from service.spectra import PREPROCESS_VERSION
from service.spectra.preprocess import LogLambdaGrid


class ModelError(Exception):
    """A model that cannot be served; ``code`` is machine-readable (model_not_found, ...)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"[{code}] {detail}")


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    dtype: str
    shape: list[int]


class LabelSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    top: str
    subtype: str | None = None


class Manifest(BaseModel):
    """The contract a model version declares (models/README.md)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str
    version: int
    kind: str
    file: str = "model.onnx"
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[LabelSpec] = []
    top_classes: list[str] = []
    grid: dict[str, Any] | None = None
    preprocess_version: str
    training: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    saliency: dict[str, Any] | None = None  # saliency.onnx + introspect.onnx (optional)

    def spectrum_grid(self) -> LogLambdaGrid:
        if self.grid is None:
            raise ModelError("bad_manifest", f"{self.name} v{self.version}: no grid")
        return LogLambdaGrid.from_manifest(self.grid)


@dataclass(frozen=True)
class ModelVersion:
    """A verified model version: its manifest and the ONNX bytes that matched the checksum."""

    manifest: Manifest
    path: Path  # the version directory
    onnx: bytes
    # what every log line, metric label and route names it by, read once from the manifest
    name: str = field(init=False)
    version: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.manifest.name)  # frozen: set once, here
        object.__setattr__(self, "version", self.manifest.version)


def repository_hint(root: str | Path) -> str:
    """How to point the service elsewhere, with the absolute path it looked in: a relative
    repository is resolved against the current directory, and "no model in models" does not
    say which directory that was."""
    return (f"model repository {Path(root).resolve()}; pass --repository DIR or set "
            "SPECULA_MODEL_REPOSITORY to a directory of <name>/<version>/manifest.json "
            "(models/README.md)")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelRepository:
    """A directory of models; integer version directories, the highest one is ``latest``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        """Integer version directories holding a manifest, ascending."""
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir()
                      if p.is_dir() and p.name.isdigit() and (p / MANIFEST).is_file())

    def kind(self, name: str) -> str | None:
        """The ``kind`` the latest version's manifest declares (None if unreadable): lets the
        server pick the models it can serve, and how, without loading anything."""
        versions = self.versions(name)
        return manifest_kind(self.root / name / str(versions[-1])) if versions else None

    def resolve(self, name: str, version: int | None = None) -> int:
        """The version to load: ``version`` if present, else the latest."""
        available = self.versions(name)
        if not available:
            raise ModelError("model_not_found", f"no model {name!r} in {self.root}")
        if version is None:
            return available[-1]
        if version not in available:
            raise ModelError("model_not_found", f"{name!r} has no version {version} "
                             f"(available: {available})")
        return version

    def load(self, name: str, version: int | None = None, *, kind: str | None = None,
             preprocess_versions: Sequence[str] = (PREPROCESS_VERSION,)) -> ModelVersion:
        """Read, validate and checksum one version; raises ``ModelError`` if unservable.

        ``kind`` and ``preprocess_versions`` say what the caller can serve: the spectrum
        preprocessing by default; the lightcone side passes its kind and its own versions.
        """
        v = self.resolve(name, version)
        vdir = self.root / name / str(v)
        try:
            manifest = Manifest.model_validate(json.loads((vdir / MANIFEST).read_bytes()))
        except (OSError, ValueError, ValidationError) as exc:
            raise ModelError("bad_manifest", f"{vdir / MANIFEST}: {exc}") from None
        if kind is not None and manifest.kind != kind:
            raise ModelError("unsupported_kind", f"{name} v{v}: kind {manifest.kind!r}")
        if manifest.name != name or manifest.version != v:
            raise ModelError("bad_manifest", f"{vdir}: manifest says {manifest.name!r} "
                             f"v{manifest.version}, directory says {name!r} v{v}")
        if manifest.preprocess_version not in preprocess_versions:
            raise ModelError(
                "preprocess_mismatch",
                f"{name} v{v} was trained with preprocess_version "
                f"{manifest.preprocess_version!r}; this service runs "
                f"{', '.join(map(repr, preprocess_versions))}")
        try:
            onnx = (vdir / manifest.file).read_bytes()
        except OSError as exc:
            raise ModelError("model_file_missing", f"{vdir / manifest.file}: {exc}") from None
        digest = sha256_hex(onnx)
        if digest != manifest.sha256.lower():
            raise ModelError("checksum_mismatch", f"{name} v{v}: sha256 of {manifest.file} is "
                             f"{digest}, manifest says {manifest.sha256}")
        return ModelVersion(manifest=manifest, path=vdir, onnx=onnx)


def read_verified(model: ModelVersion, entry: dict[str, Any]) -> bytes:
    """A companion graph of a version (``{"file", "sha256"}``, e.g. the saliency entry), read
    and checksummed like model.onnx; raises ``ModelError``."""
    path = model.path / str(entry.get("file", ""))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError("model_file_missing", f"{path}: {exc}") from None
    if sha256_hex(data) != str(entry.get("sha256", "")).lower():
        raise ModelError("checksum_mismatch", f"{model.name} v{model.version}: sha256 of "
                         f"{path.name} does not match the manifest")
    return data
