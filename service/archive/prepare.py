"""Decode and preprocess one work unit: the CPU-bound half, run in worker processes/Ray tasks.

The steps are the service's own (``SpectrumPipeline.decode_request`` and ``.preprocess``), not
a copy. What goes back to the inference side is small and picklable: per file either its
spectra's identities (a ``Spectrum`` with empty arrays and the metadata ``encode_response``
reads) with their ``Prepared`` model input or ``SpectrumError`` — or the file's error. Errors
travel as ``(code, detail)`` because ``SpectrumError`` does not survive pickling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.inference.pipeline import RESPONSE_META, Prep, SpectrumPipeline, Upload
from service.inference.repository import ModelVersion
from service.io.errors import InputError
from service.io.source import DEFAULT_MAX_BYTES, path_error
from service.spectra import Prepared, Spectrum, SpectrumError

from .inputs import InputFile
from .units import WorkUnit

ErrorTuple = tuple[str, str]  # (code, detail)
_EMPTY = np.empty(0)


@dataclass(slots=True)
class PreparedFile:
    entry: InputFile
    key: int
    spectra: list[Spectrum] = field(default_factory=list)  # identities only (no pixels)
    prepared: list[Prepared | ErrorTuple] = field(default_factory=list)
    error: ErrorTuple | None = None  # the whole file failed


@dataclass(slots=True)
class PreparedUnit:
    index: int
    files: list[PreparedFile]

    @property
    def n_spectra(self) -> int:
        return sum(len(f.prepared) or 1 for f in self.files)


def weightless(model: ModelVersion) -> ModelVersion:
    """The model's contract without its ONNX bytes: all that decoding needs, cheap to ship."""
    return ModelVersion(manifest=model.manifest, path=model.path, onnx=b"")


def decoding_pipeline(model: ModelVersion, max_file_bytes: int = DEFAULT_MAX_BYTES
                      ) -> SpectrumPipeline:
    """A pipeline used for its decode/preprocess steps only (it never predicts: no session)."""
    return SpectrumPipeline(model, runner=None, pool=None,  # type: ignore[arg-type]
                            max_file_bytes=max_file_bytes, on_stats=lambda stats: None)


def identity(s: Spectrum) -> Spectrum:
    return Spectrum(_EMPTY, _EMPTY, _EMPTY, _EMPTY,
                    {k: s.meta[k] for k in RESPONSE_META if k in s.meta})


def prepare_file(pipeline: SpectrumPipeline, entry: InputFile, key: int,
                 fmt: str | None) -> PreparedFile:
    out = PreparedFile(entry, key)
    if entry.size < 0:  # a path named in a list that is not there is file_not_found, as in
        # `specula classify` and `specula inspect`, not a corrupt file
        out.error = (("corrupt_file", "cannot stat the file") if Path(entry.path).exists()
                     else ("file_not_found", "no such file"))
        return out
    if entry.size > pipeline.max_file_bytes:
        out.error = ("too_large", f"{entry.size} bytes > limit {pipeline.max_file_bytes}")
        return out
    try:
        data = Path(entry.path).read_bytes()
    except OSError as exc:
        failure = path_error(entry.path, exc)
        out.error = (failure.code, failure.detail)
        return out
    upload = Upload(data, entry.path, None, fmt)
    try:
        spectra = pipeline.decode_request(upload)
    except InputError as exc:
        out.error = (exc.code, exc.detail)
        return out
    prepared: list[Prep] = pipeline.preprocess(spectra)
    out.spectra = [identity(s) for s in spectra]
    out.prepared = [(p.code, p.detail) if isinstance(p, SpectrumError) else p for p in prepared]
    return out


def prepare_unit(pipeline: SpectrumPipeline, unit: WorkUnit, fmt: str | None) -> PreparedUnit:
    return PreparedUnit(unit.index, [prepare_file(pipeline, f, k, fmt)
                                     for f, k in zip(unit.files, unit.keys)])


# ---- worker-process side (ProcessPoolExecutor initializer + task) ----------------------
_worker: tuple[SpectrumPipeline, str | None] | None = None


def init_worker(model: ModelVersion, max_file_bytes: int, fmt: str | None) -> None:
    global _worker
    _worker = (decoding_pipeline(model, max_file_bytes), fmt)


def prepare_in_worker(unit: WorkUnit) -> PreparedUnit:
    assert _worker is not None, "init_worker was not called"
    pipeline, fmt = _worker
    return prepare_unit(pipeline, unit, fmt)
