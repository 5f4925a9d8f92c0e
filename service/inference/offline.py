"""The service's steps without a server, file by file: what ``specula classify`` runs, and
the same for one lightcone cube (:func:`estimate_lightcone_file`).

decode_request → preprocess → predict (straight on the session, in chunks) → encode_response,
one result dict per spectrum; a file that cannot be read gives one
``{"source": ..., "error": {"code": ..., "detail": ...}}`` instead. The command itself (its
options, JSON/table/Parquet outputs, exit status) is ``service.archive.classify``: inference
does not reach up into the archive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from service.io.errors import InputError
from service.io.source import read_path
from service.spectra import Prepared

from .kinds.spectrum import build_pipeline
from .lightcone import Axes, LightconePipeline, load_lightcone_model
from .pipeline import SpectrumPipeline, Upload
from .repository import ModelRepository
from .runner import OnnxRunner


def load_pipeline(repository: str, model: str, version: int | None, device: str
                  ) -> SpectrumPipeline:
    return build_pipeline(ModelRepository(repository).load(model, version), device)


# a directory is walked only by the archive job: say how, where the user looks (the line)
DIRECTORY_HINT = ("; without a Parquet output `specula classify` reads files only: name them "
                  "(DIR/*.fits), or walk the directory as an archive job with --output "
                  "results.parquet (docs/archive.md)")


def file_failure(path: str, exc: InputError) -> dict:
    """A file's one line when it gave no spectrum: the per-item shape of the HTTP results."""
    detail = exc.detail + (DIRECTORY_HINT if exc.code == "not_a_file" else "")
    return {"source": path, "error": {"code": exc.code, "detail": detail, "source": path}}


def classify_file(pipeline: SpectrumPipeline, path: str, batch_size: int,
                  fmt: str | None) -> Iterator[dict]:
    try:
        upload = Upload(read_path(path, pipeline.max_file_bytes), path, None, fmt)
        spectra = pipeline.decode_request(upload)
    except InputError as exc:
        yield file_failure(path, exc)
        return
    for i in range(0, len(spectra), batch_size):
        part = spectra[i:i + batch_size]
        prepared = pipeline.preprocess(part)
        good = [p.x for p in prepared if isinstance(p, Prepared)]
        outputs = pipeline.runner.run({pipeline.input_name: np.stack(good)}) if good else None
        yield from pipeline.encode_response(upload, part, prepared, outputs)


def estimate_lightcone_file(repository: str, model: str, version: int | None, path: str,
                            max_file_bytes: int = 1 << 30) -> dict[str, Any]:
    """One lightcone file through a served version's own steps (reader, sky patches,
    preprocessing, ONNX graph, patch combination, warnings): the body of a
    ``/v1/lightcones:infer`` answer, without the HTTP."""
    repo = ModelRepository(repository)
    mv = load_lightcone_model(repo, model, repo.resolve(model, version))
    runner = OnnxRunner(mv.onnx, device="cpu")
    # its steps are called here, in this thread: no worker pool (as archive.prepare does)
    pipe = LightconePipeline(mv, runner, pool=None,  # type: ignore[arg-type]
                             max_file_bytes=max_file_bytes, on_stats=lambda _: None)
    decoded = pipe.decode_and_preprocess(read_path(path, max_file_bytes), path, None, Axes())
    return pipe.encode_response(decoded, runner.run({pipe.input_name: decoded.x}))
