"""``spectrum-classifier``: class probabilities (and redshift) of one spectrum per row.

Contract: one input ``spectrum`` (N, 2, npix) on the manifest's log-λ grid, the spectrum
preprocessing version this code runs, and ``probs`` (N, len(labels)) among the outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.spectra import PREPROCESS_VERSION

from ..pipeline import SpectrumPipeline
from ..repository import ModelError, ModelVersion
from ..runner import OnnxRunner, auto_concurrent_batches
from ..saliency import load_saliency
from .base import Built, ModelKind

KIND = "spectrum-classifier"


class SpectrumKind(ModelKind):
    name = KIND
    preprocess_versions = (PREPROCESS_VERSION,)

    @classmethod
    def check_outputs(cls, model: ModelVersion, warm_up: dict[str, np.ndarray]) -> None:
        m, k = model.manifest, len(model.manifest.labels)
        if warm_up["probs"].shape != (2, k):
            raise ModelError("contract_mismatch", f"{m.name} v{m.version}: probs shape "
                             f"{warm_up['probs'].shape}, expected (2, {k}) for {k} labels")

    def build(self, model: ModelVersion) -> Built:
        s = self.settings
        # one thread per run, as many runs as CPUs (auto_concurrent_batches): see runner.py
        runner = OnnxRunner(model.onnx, device=s.device,
                            intra_op_threads=s.intra_op_threads or 1, warm_rows=s.max_batch_size)
        self.check_contract(model, runner)
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
        return Built(runner, pipeline, saliency, why_not)

    @classmethod
    def oip_parameters(cls, model: ModelVersion) -> dict[str, Any]:
        m = model.manifest
        return {"labels": [lab.model_dump() for lab in m.labels], "top_classes": m.top_classes}


def build_pipeline(mv: ModelVersion, device: str, intra_op_threads: int = 0
                   ) -> SpectrumPipeline:
    """A pipeline with its own session and no server: what `specula classify` and each
    archive worker run (here, beside the server's own loading, so that the archive engines
    need not import the classify command that dispatches to them)."""
    runner = OnnxRunner(mv.onnx, device=device, intra_op_threads=intra_op_threads)
    SpectrumKind.check_contract(mv, runner)
    return SpectrumPipeline(mv, runner, pool=None, max_file_bytes=1 << 31,
                            on_stats=lambda stats: None)
