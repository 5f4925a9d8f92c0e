"""The live models: load them from the repository, hand them to requests, swap them safely.

A request takes a *lease* on one :class:`ServedModel` (``async with server.use(name)``).
``reload()`` builds every new version completely — checksum, session, contract check, a
warm-up batch — off the event loop, and only then swaps the dictionary entry, which is one
assignment on the loop: a request sees the old model or the new one, never neither. The old
version keeps its batcher until its last lease is returned, so work it accepted finishes on
the model that accepted it. A reload that fails for a model keeps that model's old versions.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np

from service.metrics import ModelLoadStats, Stats
from service.settings import Settings

from .pipeline import SpectrumPipeline
from .repository import ModelError, ModelRepository, ModelVersion
from .runner import OnnxRunner, ServedVersion, auto_concurrent_batches
from .saliency import SaliencyPipeline, load_saliency

log = logging.getLogger("specula.serving")

SUPPORTED_KINDS = {"spectrum-classifier"}
DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32}


@dataclass(eq=False)
class ServedModel(ServedVersion):
    model: ModelVersion
    runner: OnnxRunner
    pipeline: SpectrumPipeline
    saliency: SaliencyPipeline | None = None  # None: no (servable) saliency.onnx, see why
    saliency_unavailable: str | None = None
    leases: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def retire(self) -> None:
        """Wait for the last lease, then drain and stop the batcher."""
        while self.leases:
            self.idle.clear()
            await self.idle.wait()
        await self.pipeline.batcher.close()
        if self.saliency is not None:
            await self.saliency.close()  # its saliency and introspection queues


def check_contract(model: ModelVersion, runner: OnnxRunner) -> None:
    """The session must have the manifest's tensors, and a warm-up batch must run."""
    m = model.manifest
    if m.kind not in SUPPORTED_KINDS:
        raise ModelError("unsupported_kind", f"{m.name} v{m.version}: kind {m.kind!r}")
    declared_in, declared_out = [t.name for t in m.inputs], [t.name for t in m.outputs]
    if runner.input_names != declared_in or set(declared_out) - set(runner.output_names):
        raise ModelError("contract_mismatch", f"{m.name} v{m.version}: graph has inputs "
                         f"{runner.input_names} outputs {runner.output_names}; manifest "
                         f"declares {declared_in} → {declared_out}")
    spec = m.inputs[0]
    x = np.zeros([2 if d < 0 else d for d in spec.shape], dtype=DTYPES.get(spec.dtype))
    try:
        out = runner.run({spec.name: x})
    except Exception as exc:  # noqa: BLE001 — whatever ORT raises, the model is unservable
        raise ModelError("contract_mismatch", f"{m.name} v{m.version}: warm-up failed: {exc}")
    k = len(m.labels)
    if out["probs"].shape != (2, k):
        raise ModelError("contract_mismatch", f"{m.name} v{m.version}: probs shape "
                         f"{out['probs'].shape}, expected (2, {k}) for {k} labels")


def build_pipeline(mv: ModelVersion, device: str, intra_op_threads: int = 0
                   ) -> SpectrumPipeline:
    """A pipeline with its own session and no server: what `specula classify` and each
    archive worker run (here, beside the server's own loading, so that the archive engines
    need not import the classify command that dispatches to them)."""
    runner = OnnxRunner(mv.onnx, device=device, intra_op_threads=intra_op_threads)
    check_contract(mv, runner)
    return SpectrumPipeline(mv, runner, pool=None, max_file_bytes=1 << 31,
                            on_stats=lambda stats: None)


class ModelServer:
    def __init__(self, settings: Settings, on_stats: Callable[[Stats], None]) -> None:
        self.settings = settings
        self.repository = ModelRepository(settings.model_repository)
        self.on_stats = on_stats
        self.pool = ThreadPoolExecutor(settings.preprocess_workers or os.cpu_count() or 1,
                                       thread_name_prefix="preprocess")
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()

    # ---- lookup ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> dict[int, ServedModel]:
        return self._models.get(name, {})

    def get(self, name: str, version: int | None = None) -> ServedModel:
        versions = self._models.get(name)
        if not versions:
            raise ModelError("model_not_found", f"no model {name!r} is being served")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise ModelError("model_not_found", f"{name!r} has no served version {version} "
                             f"(served: {sorted(versions)})")
        return versions[version]

    @property
    def ready(self) -> bool:
        return bool(self._models)

    @asynccontextmanager
    async def use(self, name: str, version: int | None = None) -> AsyncIterator[ServedModel]:
        served = self.get(name, version)
        served.leases += 1
        try:
            yield served
        finally:
            served.leases -= 1
            if not served.leases:
                served.idle.set()

    # ---- load / reload --------------------------------------------------------------------
    def _build(self, model: ModelVersion) -> ServedModel:
        """Everything slow about a version, run in a worker thread."""
        s = self.settings
        # one thread per run, as many runs as CPUs (auto_concurrent_batches): see runner.py
        runner = OnnxRunner(model.onnx, device=s.device,
                            intra_op_threads=s.intra_op_threads or 1, warm_rows=s.max_batch_size)
        check_contract(model, runner)
        pipeline = SpectrumPipeline(
            model, runner, pool=self.pool, max_file_bytes=s.max_file_bytes,
            on_stats=self.on_stats, max_batch_size=s.max_batch_size,
            max_queue_delay_s=s.max_queue_delay_ms / 1000.0, max_queue_rows=s.max_queue_rows,
            max_concurrent_batches=s.max_concurrent_batches or auto_concurrent_batches(runner),
            balance_delay_s=s.balance_delay_ms / 1000.0)
        saliency, why_not = load_saliency(
            model, pipeline, device=s.device, intra_op_threads=s.intra_op_threads,
            on_stats=self.on_stats, max_queue_delay_s=s.max_queue_delay_ms / 1000.0,
            max_batch_rows=s.saliency_max_batch_rows, max_queue_rows=s.saliency_max_queue_rows)
        return ServedModel(model, runner, pipeline, saliency, why_not)

    def _load_versions(self, name: str) -> list[ModelVersion]:
        available = self.repository.versions(name)
        if self.settings.version_policy == "latest":
            available = available[-1:]
        if not available:
            raise ModelError("model_not_found", f"no model {name!r} in {self.repository.root}")
        return [self.repository.load(name, v) for v in available]

    async def reload(self, only: str | None = None) -> dict[str, dict]:
        """(Re)load every configured model (or ``only`` one); per model a report
        ``{"status": "ok", "versions": ...}`` or ``{"status": "failed", "code", "error"}``."""
        async with self._reload_lock:
            names = set(self.settings.models or (
                n for n in self.repository.names() if self.repository.kind(n) in SUPPORTED_KINDS))
            names |= set(self._models)  # a served model that vanished: report, keep serving
            if only is not None:
                names = {only}
            report = {}
            for name in sorted(names):
                try:
                    report[name] = await self._reload_one(name)
                except ModelError as exc:
                    log.error("reload failed; keeping what was served",
                              extra={"model": name, "code": exc.code, "detail": exc.detail})
                    report[name] = {"status": "failed", "code": exc.code, "error": exc.detail,
                                    "serving": sorted(self.versions(name))}
            return report

    async def _reload_one(self, name: str) -> dict:
        loop = asyncio.get_running_loop()
        models = await loop.run_in_executor(None, self._load_versions, name)
        old = self._models.get(name, {})
        new: dict[int, ServedModel] = {}
        for m in models:
            prev = old.get(m.version)
            if (prev is not None and prev.model.manifest.sha256 == m.manifest.sha256
                    and prev.model.manifest.saliency == m.manifest.saliency):
                new[m.version] = prev  # unchanged: keep the live one, nothing to drain
            else:
                new[m.version] = await loop.run_in_executor(None, self._build, m)
        self._models[name] = new  # the swap: one assignment on the event loop
        for v, served in new.items():
            if old.get(v) is not served:
                self.on_stats(ModelLoadStats(name, str(v), served.provider,
                                             served.model.manifest.sha256))
                log.info("model loaded", extra={"model": name, "version": v,
                                                "provider": served.provider,
                                                "sha256": served.model.manifest.sha256})
        for v, served in old.items():
            if new.get(v) is not served:
                if v not in new:
                    self.on_stats(ModelLoadStats(name, str(v), loaded=False))
                task = asyncio.create_task(served.retire())
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        return {"status": "ok", "versions": sorted(new),
                "provider": {v: s.provider for v, s in new.items()}}

    async def close(self) -> None:
        """Drain every batcher (all accepted work finishes), then stop the pool."""
        served = [s for vs in self._models.values() for s in vs.values()]
        self._models = {}
        await asyncio.gather(*(s.retire() for s in served), *self._retiring)
        self.pool.shutdown(wait=True)
