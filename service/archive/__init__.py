"""Archive-scale bulk classification: millions of files in, one Parquet dataset out.

The same steps as the service and ``specula classify`` (``SpectrumPipeline.decode_request``
→ ``preprocess`` → ``OnnxRunner.run`` → ``encode_response``), arranged for throughput:

    inputs.walk_inputs ─ units.plan_units ─ resume (skip done) ─ prepare.prepare_unit
      (worker processes, or Ray tasks) ─ infer.infer_unit (one ONNX Runtime session: this
      process, or a Ray actor per session) ─ writer.PartWriter (atomic Parquet parts)

``local.run_local`` and ``ray_engine.run_ray`` are two drivers of the same unit functions, so
their rows agree exactly (ONNX Runtime's numbers depend on the batch a row is in; both engines
build the same batches from the same units).
"""

from .job import ArchiveJob, JobSummary
from .schema import SCHEMA

__all__ = ["SCHEMA", "ArchiveJob", "JobSummary"]
