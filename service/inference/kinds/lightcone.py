"""``lightcone-regressor``: posterior mean and σ of astrophysical parameters from a 21cm cube.

Contract: one input (N, 1, n_xy, n_xy, n_los) on the manifest's grid, a lightcone
preprocessing version this code runs, and ``theta_mean``/``theta_sigma`` (N, len(parameters)).
A cube is four orders of magnitude bigger than a spectrum, so requests of this kind declare
their size and reserve working memory from one byte budget shared by every lightcone version
(SPECULA_LIGHTCONE_MAX_BYTES) before their body is read; its batches are small.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from typing import Any

import numpy as np

from service.lightcones import PREPROCESS_VERSIONS
from service.metrics import Stats
from service.settings import Settings

from ..lightcone import BUDGET_FILES, KIND, ByteBudget, LightconePipeline
from ..lightcone_saliency import load_lightcone_saliency
from ..repository import ModelError, ModelVersion
from ..runner import OnnxRunner
from .base import Built, ModelKind

OUTPUTS = ("theta_mean", "theta_sigma")


class LightconeKind(ModelKind):
    name = KIND
    preprocess_versions = tuple(PREPROCESS_VERSIONS)
    sized_bodies = True

    def __init__(self, settings: Settings, pool: Executor, on_stats: Callable[[Stats], None]
                 ) -> None:
        super().__init__(settings, pool, on_stats)
        self.budget = ByteBudget(settings.lightcone_max_bytes
                                 or BUDGET_FILES * settings.max_file_bytes)

    @classmethod
    def check_outputs(cls, model: ModelVersion, warm_up: dict[str, np.ndarray]) -> None:
        m = model.manifest
        n = len(getattr(m, "parameters", []) or [])
        if not set(OUTPUTS) <= set(warm_up):
            raise ModelError("contract_mismatch", f"{m.name} v{m.version}: outputs "
                             f"{sorted(warm_up)} lack {list(OUTPUTS)}")
        if warm_up["theta_mean"].shape != (2, n):
            raise ModelError("contract_mismatch", f"{m.name} v{m.version}: theta_mean "
                             f"{warm_up['theta_mean'].shape} for {n} parameters")

    def build(self, model: ModelVersion) -> Built:
        s = self.settings
        runner = OnnxRunner(model.onnx, device=s.device, intra_op_threads=s.intra_op_threads)
        self.check_contract(model, runner)
        pipeline = LightconePipeline(model, runner, pool=self.pool,
                                     max_file_bytes=s.max_file_bytes, on_stats=self.on_stats)
        saliency, why_not = load_lightcone_saliency(
            model, runner, pipeline.batcher, device=s.device, intra_op_threads=s.intra_op_threads,
            on_stats=self.on_stats, max_batch_rows=s.lightcone_saliency_max_batch_rows,
            max_queue_rows=s.saliency_max_queue_rows)
        return Built(runner, pipeline, saliency, why_not)

    @classmethod
    def oip_parameters(cls, model: ModelVersion) -> dict[str, Any]:
        return {"parameters": getattr(model.manifest, "parameters", [])}

    def reserve(self, model: ModelVersion, body_bytes: int) -> AbstractAsyncContextManager:
        """The body, its decoded copy and one row of model input."""
        per_row = math.prod(d for d in model.manifest.inputs[0].shape if d > 0) * 4
        return self.budget.reserve(2 * body_bytes + per_row)
