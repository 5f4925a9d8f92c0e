"""One spectrum's way through the service, as named steps (after LitServe's LitAPI).

    decode_request → preprocess → batch → predict → unbatch → encode_response

``decode_request`` and ``preprocess`` are CPU work on untrusted bytes: they run in a worker
pool, never on the event loop. ``batch`` hands the rows to the model's
:class:`~service.inference.batcher.DynamicBatcher`, which calls ``predict`` on lists of rows
drawn from many requests; ``unbatch`` gathers one request's rows back into arrays;
``encode_response`` turns them into plain dicts (the API serialises them).
The Open Inference Protocol path skips decode/preprocess: its tensors are already model input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.io.errors import InputError
from service.metrics import PreprocessStats, Stats
from service.spectra import Prepared, Source, Spectrum, SpectrumError, read_spectra
from service.spectra.preprocess import preprocess_many

from .batcher import BatcherError, DeadlineExceeded, DynamicBatcher
from .postprocess import LabelMap, summarise
from .quality import quality, quality_names
from .repository import ModelVersion
from .runner import OnnxRunner

Row = tuple[dict[str, np.ndarray], int]  # (a batch's outputs, row index in that batch)


@dataclass(frozen=True, slots=True)
class Upload:
    """One uploaded file (or raw body): bytes and what the client called it."""

    data: bytes
    name: str
    content_type: str | None = None
    format: str | None = None  # force a reader instead of identifying


Prep = Prepared | SpectrumError  # one spectrum after preprocess: model input, or why not

# The file's own pipeline answer (SDSS SPECOBJ CLASS/SUBCLASS/Z/ZWARNING, as the readers put
# it in meta), reported beside the prediction so a disagreement is seen without a join.
FILE_FIELDS = {"file_class": "class", "file_subclass": "subclass", "file_z": "z",
               "file_zwarning": "zwarning"}
# every meta key encode_response reads: what an archive worker ships back with a spectrum
RESPONSE_META = ("object_id", "format", "warnings", *FILE_FIELDS.values())


def upload_failure(upload: Upload, code: str, detail: str) -> dict[str, Any]:
    """The item of a file that gave no spectrum, in its place among the results: the one
    shape the stream, the buffered response and `specula classify` share."""
    return {"source": upload.name, "error": {"code": code, "detail": detail,
                                             "source": upload.name}}


def check_deadline(deadline: float | None, step: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded(f"deadline passed before {step}")


class SpectrumPipeline:
    """The named steps for one spectrum-classifier model version."""

    def __init__(self, model: ModelVersion, runner: OnnxRunner, *, pool: Executor | None,
                 max_file_bytes: int, on_stats: Callable[[Stats], None], **batcher_opts: Any):
        self.model = model
        self.runner = runner
        self.pool = pool  # decode/preprocess workers; None = the loop's default executor
        self.max_file_bytes = max_file_bytes
        self.on_stats = on_stats
        self.grid = model.manifest.spectrum_grid()
        self.labels = LabelMap.from_manifest(model.manifest)
        self.input_name = model.manifest.inputs[0].name
        self.stat_labels = (model.name, str(model.version))
        self.batcher: DynamicBatcher[np.ndarray, Row] = DynamicBatcher(
            self.predict, labels=self.stat_labels, on_stats=on_stats, **batcher_opts)

    # ---- 1. decode_request (worker pool) ------------------------------------------------
    def decode_request(self, upload: Upload) -> list[Spectrum]:
        """Bytes → spectra; a file that cannot be read raises an ``InputError`` (a 4xx)."""
        source = Source(upload.data, name=upload.name, max_bytes=self.max_file_bytes,
                        content_type=upload.content_type)
        try:
            return read_spectra(source, format=upload.format)[1]
        except InputError as exc:
            exc.source = exc.source or upload.name
            raise
        finally:
            source.close()

    # ---- 2. preprocess (worker pool) ----------------------------------------------------
    def preprocess(self, spectra: list[Spectrum]) -> list[Prep]:
        """Each spectrum onto the model grid. A hopeless spectrum (a dead fibre) becomes its
        error in place, so one bad fibre does not fail the other 2,435 of an exposure."""
        return preprocess_many(spectra, self.grid)

    def _decode_small(self, upload: Upload, step: int) -> tuple[list[Spectrum], list[Prep] | None]:
        """decode_request, and preprocess too when the file fits one batch: a single spectrum
        then costs one hop to the pool, not two. Bigger files come back unprocessed, to be
        preprocessed in parallel chunks."""
        spectra = self.decode_request(upload)
        return spectra, (self.preprocess(spectra) if len(spectra) <= step else None)

    # ---- 3. batch / 4. predict (batcher thread) / 5. unbatch ------------------------------
    async def batch(self, x: np.ndarray, deadline: float | None) -> list[Row]:
        """Queue the rows of ``x`` (N, ...) for the model; one Row per input row."""
        check_deadline(deadline, "batching")
        return await self.batcher.submit(list(x), deadline)

    def predict(self, rows: list[np.ndarray]) -> list[Row]:
        """The batcher's function: stack rows from many requests, run once, index outputs."""
        outputs = self.runner.run({self.input_name: np.stack(rows)})
        return [(outputs, i) for i in range(len(rows))]

    @staticmethod
    def unbatch(rows: list[Row]) -> dict[str, np.ndarray]:
        """One request's rows back into (N, ...) arrays, slicing contiguous runs of a batch."""
        runs: list[tuple[dict[str, np.ndarray], int, int]] = []
        for outputs, i in rows:
            if runs and runs[-1][0] is outputs and runs[-1][2] == i:
                runs[-1] = (outputs, runs[-1][1], i + 1)
            else:
                runs.append((outputs, i, i + 1))
        if len(runs) == 1:  # the usual case: one batch held the whole request; views, no copy
            outputs, a, b = runs[0]
            return {k: v[a:b] for k, v in outputs.items()}
        names = runs[0][0].keys()
        return {k: np.concatenate([o[k][a:b] for o, a, b in runs]) for k in names}

    async def infer(self, x: np.ndarray, deadline: float | None = None) -> dict[str, np.ndarray]:
        """batch → predict → unbatch for a model-ready tensor (the OIP path)."""
        return self.unbatch(await self.batch(x, deadline))

    # ---- 6. encode_response -------------------------------------------------------------
    def encode_response(self, upload: Upload, spectra: list[Spectrum], prepared: list[Prep],
                        outputs: dict[str, np.ndarray] | None) -> list[dict[str, Any]]:
        """One dict per spectrum, in file order: the classification, or the spectrum's error.
        ``outputs`` holds rows for the spectra that preprocessed, in order."""
        results = iter(summarise(outputs, self.labels) if outputs is not None else [])
        good = [p for p in prepared if isinstance(p, Prepared)]
        flags = iter(quality(good, outputs).tolist() if outputs is not None else [])
        name, version = self.stat_labels
        out = []
        for s, p in zip(spectra, prepared):
            if isinstance(p, SpectrumError):
                r = {"object_id": s.object_id, "source": upload.name,
                     "error": {**p.to_dict(), "source": upload.name}}
            else:
                r, q = next(results), next(flags)
                r.update(quality=q, quality_flags=quality_names(q))
                r.update(object_id=s.object_id, source=upload.name,
                         format=s.meta.get("format"), model=name, version=int(version),
                         warnings=p.warnings() + s.meta.get("warnings", []))
                r.update({k: s.meta[m] for k, m in FILE_FIELDS.items()
                          if s.meta.get(m) is not None})
            out.append(r)
        return out

    # ---- the whole path ------------------------------------------------------------------
    async def classify_upload(self, upload: Upload, deadline: float | None
                              ) -> list[dict[str, Any]]:
        """decode → (preprocess → batch → predict → unbatch → encode) per chunk of rows.

        The chunks of a big file (an exposure) are preprocessed in parallel on the pool and
        each goes to the batcher as soon as it is ready, so the model starts on the first
        fibres while later ones are still being resampled. A file whose spectra *all* fail
        raises the first error (a 4xx); otherwise failures are per-spectrum entries.
        """
        loop = asyncio.get_running_loop()
        check_deadline(deadline, "decoding")
        self.batcher.check_room(1)  # a full queue refuses before decoding, not after
        step = self.batcher.max_batch_size
        t0 = time.perf_counter()
        spectra, prepared = await loop.run_in_executor(self.pool, self._decode_small, upload,
                                                       step)
        busy = [time.perf_counter() - t0]

        async def finish(part: list[Spectrum], prepared: list[Prep]) -> list[dict[str, Any]]:
            good = [p.x for p in prepared if isinstance(p, Prepared)]
            outputs = await self.infer(np.stack(good), deadline) if good else None
            return self.encode_response(upload, part, prepared, outputs)

        async def chunk(part: list[Spectrum]) -> list[dict[str, Any]]:
            check_deadline(deadline, "preprocessing")
            t = time.perf_counter()
            prepared = await loop.run_in_executor(self.pool, self.preprocess, part)
            busy.append(time.perf_counter() - t)
            return await finish(part, prepared)

        if prepared is not None:
            parts = [await finish(spectra, prepared)]
        else:
            parts = await asyncio.gather(*(chunk(spectra[i:i + step])
                                           for i in range(0, len(spectra), step)))
        self.on_stats(PreprocessStats(*self.stat_labels, seconds=sum(busy)))
        results = [r for part in parts for r in part]
        if all("error" in r for r in results):
            first = results[0]["error"]
            raise SpectrumError(first["code"], first["detail"], source=upload.name)
        return results

    async def classify(self, uploads: list[Upload], deadline: float | None = None
                       ) -> list[dict[str, Any]]:
        """Every upload, in order. A file that cannot be read is one item ``{"source",
        "error"}`` in its place, as in the stream, so one bad file does not lose the other
        files' results; when *every* file failed there is nothing to return and the first
        failure (in upload order) is raised: the request's 4xx. Anything but a bad file (a
        full queue, the deadline) is about the request, not a file: raised as it is."""
        done = await asyncio.gather(*(self.classify_upload(u, deadline) for u in uploads),
                                    return_exceptions=True)
        for d in done:
            if isinstance(d, BaseException) and not isinstance(d, InputError):
                raise d
        if all(isinstance(d, InputError) for d in done):
            raise done[0]
        return [r for u, d in zip(uploads, done)
                for r in ([upload_failure(u, d.code, d.detail)]
                          if isinstance(d, InputError) else d)]

    async def classify_stream(self, uploads: list[Upload], deadline: float | None = None
                              ) -> AsyncIterator[dict[str, Any]]:
        """Results as each upload finishes (NDJSON); a bad upload yields an error line."""
        pending = [asyncio.ensure_future(self._one(u, deadline)) for u in uploads]
        try:
            for fut in asyncio.as_completed(pending):
                for item in await fut:
                    yield item
        finally:
            for fut in pending:
                fut.cancel()

    async def _one(self, upload: Upload, deadline: float | None) -> list[dict[str, Any]]:
        try:
            return await self.classify_upload(upload, deadline)
        except (InputError, BatcherError) as exc:
            detail = exc.detail if isinstance(exc, InputError) else str(exc)
            return [upload_failure(upload, exc.code, detail)]
