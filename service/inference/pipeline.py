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
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import numpy as np

from service.metrics import PreprocessStats, Stats
from service.spectra import Prepared, Source, Spectrum, SpectrumError, preprocess, read_spectra

from .batcher import BatcherError, DeadlineExceeded, DynamicBatcher
from .postprocess import LabelMap, summarise
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


@dataclass(frozen=True, slots=True)
class Decoded:
    """The spectra of one upload, preprocessed; or the error that stopped it."""

    upload: Upload
    spectra: list[Spectrum]
    prepared: list[Prepared]
    error: SpectrumError | None = None


def check_deadline(deadline: float | None, step: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded(f"deadline passed before {step}")


class SpectrumPipeline:
    """The named steps for one spectrum-classifier model version."""

    def __init__(self, model: ModelVersion, runner: OnnxRunner, *, pool: Executor,
                 max_file_bytes: int, on_stats: Callable[[Stats], None], **batcher_opts: Any):
        self.model = model
        self.runner = runner
        self.pool = pool
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
        source = Source(upload.data, name=upload.name, max_bytes=self.max_file_bytes,
                        content_type=upload.content_type)
        try:
            return read_spectra(source, format=upload.format)[1]
        finally:
            source.close()

    # ---- 2. preprocess (worker pool) ----------------------------------------------------
    def preprocess(self, spectra: list[Spectrum]) -> list[Prepared]:
        return [preprocess(s, self.grid) for s in spectra]

    def decode_and_preprocess(self, upload: Upload) -> Decoded:
        """Steps 1–2 for one upload in one pool hop; a bad input becomes ``error``."""
        try:
            spectra = self.decode_request(upload)
            return Decoded(upload, spectra, self.preprocess(spectra))
        except SpectrumError as exc:
            if exc.source is None:
                exc.source = upload.name
            return Decoded(upload, [], [], exc)

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
        names = runs[0][0].keys()
        return {k: np.concatenate([o[k][a:b] for o, a, b in runs]) for k in names}

    async def infer(self, x: np.ndarray, deadline: float | None = None) -> dict[str, np.ndarray]:
        """batch → predict → unbatch for a model-ready tensor (the OIP path)."""
        return self.unbatch(await self.batch(x, deadline))

    # ---- 6. encode_response -------------------------------------------------------------
    def encode_response(self, decoded: Decoded, outputs: dict[str, np.ndarray]
                        ) -> list[dict[str, Any]]:
        results = summarise(outputs, self.labels)
        name, version = self.stat_labels
        for r, s, p in zip(results, decoded.spectra, decoded.prepared):
            r.update(object_id=s.object_id, source=decoded.upload.name,
                     format=s.meta.get("format"), model=name, version=int(version),
                     warnings=p.warnings())
        return results

    # ---- the whole path ------------------------------------------------------------------
    async def prepare(self, uploads: list[Upload], deadline: float | None) -> list[Decoded]:
        """decode_request + preprocess of every upload, in parallel on the pool."""
        check_deadline(deadline, "decoding")
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        decoded = await asyncio.gather(
            *(loop.run_in_executor(self.pool, self.decode_and_preprocess, u) for u in uploads))
        self.on_stats(PreprocessStats(*self.stat_labels, seconds=time.perf_counter() - t0))
        return list(decoded)

    async def classify_decoded(self, decoded: Decoded, deadline: float | None
                               ) -> list[dict[str, Any]]:
        if decoded.error is not None:
            raise decoded.error
        x = np.stack([p.x for p in decoded.prepared])
        return self.encode_response(decoded, await self.infer(x, deadline))

    async def classify(self, uploads: list[Upload], deadline: float | None = None
                       ) -> list[dict[str, Any]]:
        """All uploads or nothing: the first bad input fails the request (a 4xx)."""
        decoded = await self.prepare(uploads, deadline)
        for d in decoded:
            if d.error is not None:
                raise d.error
        good = [d for d in decoded if d.prepared]
        results = await asyncio.gather(*(self.classify_decoded(d, deadline) for d in good))
        return [r for rs in results for r in rs]

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
            (decoded,) = await self.prepare([upload], deadline)
            return await self.classify_decoded(decoded, deadline)
        except SpectrumError as exc:
            return [{"source": upload.name, "error": exc.to_dict()}]
        except BatcherError as exc:
            return [{"source": upload.name, "error": {"code": exc.code, "detail": str(exc)}}]
