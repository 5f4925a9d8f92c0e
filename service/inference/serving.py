"""The live models, every kind: load them from the repository, hand them to requests, swap
them safely. One server for all kinds; what differs between kinds is in ``kinds/``.

A request takes a *lease* on one :class:`ServedModel` (``async with server.use(name)``).
``reload()`` builds every new version completely — checksum, session, contract check, a
warm-up batch — off the event loop, and only then swaps the dictionary entry, which is one
assignment on the loop: a request sees the old model or the new one, never neither. The old
version keeps its batcher until its last lease is returned, so work it accepted finishes on
the model that accepted it. A reload that fails for a model keeps that model's old versions.
The kind of a model is its latest manifest's ``kind`` (ModelRepository.kind); models of a
kind no module in ``kinds/`` serves are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from service.metrics import ModelLoadStats, Stats
from service.settings import Settings

from .kinds import KINDS, ModelKind
from .repository import ModelError, ModelRepository, ModelVersion
from .runner import OnnxRunner

log = logging.getLogger("specula.serving")

# the archive engines and `specula classify` build a spectrum pipeline without a server
__all__ = ["ModelServer", "ServedModel"]


@dataclass(eq=False)
class ServedModel:
    """One loaded version of any kind: what its kind built, and the leases held on it."""

    model: ModelVersion
    kind: ModelKind
    runner: OnnxRunner
    pipeline: Any  # the kind's pipeline: SpectrumPipeline, LightconePipeline, ...
    saliency: Any | None = None  # None: no (servable) saliency.onnx, see why
    saliency_unavailable: str | None = None
    leases: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def provider(self) -> str:
        return self.runner.provider

    async def retire(self) -> None:
        """Wait for the last lease, then drain and stop the batcher."""
        while self.leases:
            self.idle.clear()
            await self.idle.wait()
        await self.pipeline.batcher.close()
        if self.saliency is not None:
            await self.saliency.close()  # its saliency (and introspection) queues


class ModelServer:
    def __init__(self, settings: Settings, on_stats: Callable[[Stats], None]) -> None:
        self.settings = settings
        self.repository = ModelRepository(settings.model_repository)
        self.on_stats = on_stats
        self.pool = ThreadPoolExecutor(settings.preprocess_workers or os.cpu_count() or 1,
                                       thread_name_prefix="preprocess")
        self.kinds: dict[str, ModelKind] = {k.name: k(settings, self.pool, on_stats)
                                            for k in KINDS}
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()

    # ---- lookup ---------------------------------------------------------------------------
    def names(self, kind: str | None = None) -> list[str]:
        """Served models, of one kind or all."""
        return sorted(n for n in self._models if kind is None or self.kind_of(n) == kind)

    def kind_of(self, name: str) -> str | None:
        """The kind of a served model (every served version of a model is of one kind)."""
        versions = self._models.get(name)
        return next(iter(versions.values())).kind.name if versions else None

    def versions(self, name: str) -> dict[int, ServedModel]:
        return self._models.get(name, {})

    def get(self, name: str, version: int | None = None, *, kind: str | None = None
            ) -> ServedModel:
        """The served version (latest when ``version`` is None); with ``kind``, only a model
        of that kind: an endpoint of one kind answers 404 for a model of another."""
        versions = self._models.get(name)
        if not versions or (kind is not None and self.kind_of(name) != kind):
            what = f"{kind} model" if kind else "model"
            raise ModelError("model_not_found", f"no {what} {name!r} is being served")
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
    async def use(self, name: str, version: int | None = None, *, kind: str | None = None
                  ) -> AsyncIterator[ServedModel]:
        served = self.get(name, version, kind=kind)
        served.leases += 1
        try:
            yield served
        finally:
            served.leases -= 1
            if not served.leases:
                served.idle.set()

    # ---- load / reload --------------------------------------------------------------------
    def servable(self) -> list[str]:
        """Models in the repository whose kind this server serves."""
        return [n for n in self.repository.names() if self.repository.kind(n) in self.kinds]

    def _load_versions(self, name: str) -> tuple[ModelKind, list[ModelVersion]]:
        available = self.repository.versions(name)
        if self.settings.version_policy == "latest":
            available = available[-1:]
        if not available:
            raise ModelError("model_not_found", f"no model {name!r} in {self.repository.root}")
        declared = self.repository.kind(name)
        kind = self.kinds.get(declared or "")
        if kind is None:
            raise ModelError("unsupported_kind", f"{name}: kind {declared!r} (served kinds: "
                             f"{', '.join(sorted(self.kinds))})")
        return kind, [kind.load(self.repository, name, v) for v in available]

    def _build(self, kind: ModelKind, model: ModelVersion) -> ServedModel:
        """Everything slow about a version, run in a worker thread."""
        built = kind.build(model)
        return ServedModel(model, kind, built.runner, built.pipeline, built.saliency,
                           built.saliency_unavailable)

    async def reload(self, only: str | None = None) -> dict[str, dict]:
        """(Re)load every configured model (or ``only`` one); per model a report
        ``{"status": "ok", "versions": ...}`` or ``{"status": "failed", "code", "error"}``."""
        async with self._reload_lock:
            names = set(self.settings.models or self.servable())
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
        kind, models = await loop.run_in_executor(None, self._load_versions, name)
        old = self._models.get(name, {})
        new: dict[int, ServedModel] = {}
        for m in models:
            prev = old.get(m.version)
            if (prev is not None and prev.kind is kind
                    and prev.model.manifest.sha256 == m.manifest.sha256
                    and prev.model.manifest.saliency == m.manifest.saliency):
                new[m.version] = prev  # unchanged: keep the live one, nothing to drain
            else:
                new[m.version] = await loop.run_in_executor(None, self._build, kind, m)
        self._models[name] = new  # the swap: one assignment on the event loop
        for v, served in new.items():
            if old.get(v) is not served:
                self.on_stats(ModelLoadStats(name, str(v), served.provider,
                                             served.model.manifest.sha256))
                log.info("model loaded", extra={"model": name, "version": v, "kind": kind.name,
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
