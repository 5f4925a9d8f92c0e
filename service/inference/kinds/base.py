"""What the one model server needs to know about a kind of model, and nothing more.

A *kind* is the manifest's ``kind`` (``spectrum-classifier``, ``lightcone-regressor``): it
decides which preprocessing versions a version may declare, what its graph must return, how a
served version's pipeline is built from the settings, and which kind-specific parameters its
OIP metadata carries. Everything else — finding versions, checksums, leases, reload, retire,
the OIP routes — is the same for every kind and lives once, in the server and the API. Adding a
kind is one subclass of :class:`ModelKind` in a module of this package (docs/architecture.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from service.metrics import Stats
from service.settings import Settings

from ..repository import ModelError, ModelRepository, ModelVersion
from ..runner import OnnxRunner

DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32}


@dataclass(frozen=True)
class Built:
    """One version made servable by its kind: session, pipeline (whose ``batcher`` every
    request of the version shares, and whose ``infer(x, deadline)`` OIP calls) and the
    optional saliency steps (None, with the reason, when the version has none)."""

    runner: OnnxRunner
    pipeline: Any
    saliency: Any | None = None
    saliency_unavailable: str | None = None


class ModelKind(ABC):
    """One kind of model, as the server meets it. An instance per server: it holds what all
    versions of the kind share (settings, the decode pool, a memory budget)."""

    name: ClassVar[str]  # the manifest's ``kind``
    preprocess_versions: ClassVar[tuple[str, ...]]  # the ones this code runs
    # True: a request's body must declare its size (Content-Length), which is reserved from
    # this kind's working-memory budget before the body is read (see ``reserve``)
    sized_bodies: ClassVar[bool] = False

    def __init__(self, settings: Settings, pool: Executor, on_stats: Callable[[Stats], None]
                 ) -> None:
        self.settings, self.pool, self.on_stats = settings, pool, on_stats

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, repository: ModelRepository, name: str, version: int) -> ModelVersion:
        """Read, validate and checksum one version as this kind."""
        return repository.load(name, version, kind=cls.name,
                               preprocess_versions=cls.preprocess_versions)

    @classmethod
    def check_contract(cls, model: ModelVersion, runner: OnnxRunner) -> None:
        """The session must have the manifest's tensors, a warm-up batch of two rows must
        run, and what it returns must be what this kind promises its clients."""
        m = model.manifest
        if m.kind != cls.name:
            raise ModelError("unsupported_kind", f"{m.name} v{m.version}: kind {m.kind!r}, "
                             f"not {cls.name!r}")
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
            raise ModelError("contract_mismatch", f"{m.name} v{m.version}: warm-up failed: "
                             f"{exc}") from None
        cls.check_outputs(model, out)

    @classmethod
    @abstractmethod
    def check_outputs(cls, model: ModelVersion, warm_up: dict[str, np.ndarray]) -> None:
        """Raise ``ModelError("contract_mismatch")`` when a two-row warm-up's outputs are not
        what this kind's clients read (shapes against the manifest's labels/parameters)."""

    @abstractmethod
    def build(self, model: ModelVersion) -> Built:
        """Session, contract check, pipeline and saliency of one version: slow, run in a
        worker thread, and only then swapped in by the server."""

    # ---- answering ------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def oip_parameters(cls, model: ModelVersion) -> dict[str, Any]:
        """This kind's entries of the OIP metadata ``parameters`` (labels, physical
        parameters, ...), beside the ones every kind has."""

    def reserve(self, model: ModelVersion, body_bytes: int) -> AbstractAsyncContextManager:
        """Working memory an OIP request of ``body_bytes`` holds while it runs (only asked of
        kinds with ``sized_bodies``); nothing by default."""
        return nullcontext()
