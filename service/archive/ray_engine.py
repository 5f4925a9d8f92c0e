"""The cluster engine: the same work units on Ray Data, Parquet parts written by the driver.

    from_items(units) ─ map_batches(prepare, tasks, 1 CPU each)          decode + preprocess
                      ─ map_batches(InferActor, actor pool, 1 ORT session each; 1 GPU each
                        when the cluster has GPUs)                      batches → rows
                      ─ iter_batches on the driver ─ writer.PartWriter  atomic parts, resume

The decode step asks for memory (a unit's bytes and arrays) and the actors do not, which also
keeps Ray from fusing the two into the actor (decoding must not queue behind inference).
Units travel as pickled blobs (one row each) so a unit is never split across Ray blocks: the
actor runs exactly the batches ``local.run_local`` runs, with the same ``infer_unit``, and the
two engines' rows agree bit for bit. The driver, not Ray's ``write_parquet``, writes the
output: rows are ~1/1000 of the input bytes (a few numbers per 100+ kB FITS file), and going
through one ``PartWriter`` gives the cluster run the same atomic parts, ``_SUCCESS`` and
resume keys as the single-machine run. The driver walks the inputs and submits them as
datasets of ``window_units`` units at a time, so its memory stays bounded however big the
archive; each window's parts are committed as it completes.
"""

from __future__ import annotations

import logging
import pickle
import time
from contextlib import ExitStack
from typing import Any

import numpy as np
import pyarrow as pa

from service.inference.kinds.spectrum import build_pipeline
from service.inference.pipeline import SpectrumPipeline
from service.inference.repository import ModelVersion

from .ending import engine_run, keeping_finished_units
from .infer import infer_unit
from .job import ArchiveJob, JobSummary
from .prepare import decoding_pipeline, prepare_unit, weightless
from .resume import failed_keys, is_done
from .schema import schema_for
from .units import WorkUnit

_decoders: dict[str, SpectrumPipeline] = {}


def prepare_batch(batch: dict[str, np.ndarray], model: ModelVersion, max_file_bytes: int,
                  fmt: str | None) -> dict[str, Any]:
    """Ray task: decode + preprocess each unit of the batch (one decoder per worker)."""
    key = model.manifest.sha256
    if key not in _decoders:
        _decoders[key] = decoding_pipeline(model, max_file_bytes)
    units: list[WorkUnit] = [pickle.loads(b) for b in batch["unit"]]
    prepared = [pickle.dumps(prepare_unit(_decoders[key], u, fmt),
                             protocol=pickle.HIGHEST_PROTOCOL) for u in units]
    return {"prepared": np.array(prepared, dtype=object), "done": batch["done"]}


class InferActor:
    """One ONNX Runtime session per actor; turns prepared units into archive rows."""

    def __init__(self, model: ModelVersion, device: str, intra_op_threads: int,
                 batch_size: int) -> None:
        self.pipeline = build_pipeline(model, device, intra_op_threads)
        self.schema = schema_for(model)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        tables = []
        for blob, done in zip(batch["prepared"], batch["done"]):
            skip = set(pickle.loads(done))
            tables.append(infer_unit(self.pipeline, pickle.loads(blob), self.batch_size,
                                     self.schema, skip=skip.__contains__))
        return pa.concat_tables(tables)


def init_ray(address: str | None, num_cpus: int | None, object_store_bytes: int | None) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started it."""
    import ray  # the optional `ray` extra: imported only when a Ray job runs

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return False
    ray.init(num_cpus=num_cpus, object_store_memory=object_store_bytes,
             include_dashboard=False, logging_level=logging.WARNING)
    return True


def run_ray(job: ArchiveJob, *, address: str | None = None, actors: int | None = None,
            num_cpus: int | None = None, object_store_bytes: int | None = None,
            window_units: int = 256) -> JobSummary:
    import ray  # the optional `ray` extra: imported only when a Ray job runs
    import ray.data

    with ExitStack() as cleanup:  # on the way out: the run's output first, then Ray
        if init_ray(address, num_cpus, object_store_bytes):
            cleanup.callback(ray.shutdown)  # only a Ray this run started itself
        model = job.load_model()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts files; Ray's would interleave with it
        ctx.print_on_execution_start = False
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        n_actors = actors or gpus or max(1, cpus // 4)
        # CPU actors: a share of the cores for ORT, the rest for decode tasks (as in run_local)
        actor_cpus = 1 if gpus else max(1, min(4, cpus // (2 * n_actors)))
        decode_tasks = job.workers or max(1, cpus - (0 if gpus else n_actors * actor_cpus))
        run = cleanup.enter_context(engine_run(job, model))
        summary, writer, stop = run.summary, run.writer, run.stop
        light, full = weightless(model), model
        window: list[dict[str, bytes]] = []

        def run_window() -> None:
            if not window:
                return
            run.output.clear_success()
            ds = ray.data.from_items(list(window), override_num_blocks=len(window))
            ds = ds.map_batches(prepare_batch, batch_size=1, batch_format="numpy",
                                fn_kwargs={"model": light, "max_file_bytes": job.max_file_bytes,
                                           "fmt": job.reader_format},
                                num_cpus=1, memory=4 * job.bytes_per_unit,
                                compute=ray.data.TaskPoolStrategy(size=decode_tasks))
            ds = ds.map_batches(InferActor, batch_size=1, batch_format="numpy",
                                fn_constructor_kwargs={
                                    "model": full, "device": "cuda" if gpus else job.device,
                                    "intra_op_threads": 0 if gpus else actor_cpus,
                                    "batch_size": job.batch_size},
                                num_cpus=actor_cpus, num_gpus=1 if gpus else None,
                                compute=ray.data.ActorPoolStrategy(size=n_actors))
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                if stop.requested:
                    break
                writer.write(table)  # one block = whole units: parts commit between them
                writer.commit_if_due()
                summary.add(table, time.perf_counter() - run.started)
                run.progress.update(len(set(table.column("file").to_pylist())),
                                    summary.spectra_ok)
            window.clear()

        with keeping_finished_units(writer):
            for unit in job.units(model, run.done, summary, failed_keys(run.output.path)):
                if stop.requested:
                    break
                unit_done = [k for k in unit.keys if is_done(run.done, k)]
                window.append({"unit": pickle.dumps(unit), "done": pickle.dumps(unit_done)})
                if len(window) >= window_units:
                    run_window()
            if not stop.requested:
                run_window()
        run.progress.update(summary.files_skipped)
        run.finish({"engine": "ray", "actors": n_actors})
    return summary
