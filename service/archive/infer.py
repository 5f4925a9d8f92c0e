"""Infer one prepared work unit: batched ONNX Runtime runs, then the service's encoding.

The unit's good spectra, in file order, go through ``OnnxRunner.run`` in chunks of
``batch_size`` rows — the same chunks whichever engine calls this, which is what makes the
single-machine and Ray outputs agree bit for bit. Each file's slice of the outputs then goes
through ``SpectrumPipeline.encode_response`` (postprocess.summarise: class, subtype,
uncertainty, z), and the dicts become archive rows (schema.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from service.inference.pipeline import SpectrumPipeline, Upload
from service.spectra import Prepared, SpectrumError

from .prepare import PreparedUnit
from .schema import rows_from_results, table_from_rows


def run_batches(pipeline: SpectrumPipeline, xs: list[np.ndarray], batch_size: int
                ) -> dict[str, np.ndarray] | None:
    if not xs:
        return None
    parts = [pipeline.runner.run({pipeline.input_name: np.stack(xs[i:i + batch_size])})
             for i in range(0, len(xs), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def infer_unit(pipeline: SpectrumPipeline, unit: PreparedUnit, batch_size: int,
               schema: pa.Schema, skip: Callable[[int], bool] = lambda key: False) -> pa.Table:
    """Rows for every file of ``unit`` whose key is not ``skip``-ped.

    Skipped files are still inferred, so the batches, and hence the numbers of the others,
    are the same as in a run that skipped nothing."""
    xs = [p.x for f in unit.files for p in f.prepared if isinstance(p, Prepared)]
    outputs = run_batches(pipeline, xs, batch_size)
    rows: list[dict[str, Any]] = []
    start = 0
    for f in unit.files:
        n_good = sum(isinstance(p, Prepared) for p in f.prepared)
        if skip(f.key):
            start += n_good
            continue
        if f.error is not None:
            code, detail = f.error
            results = [{"source": f.entry.path, "error": {"code": code, "detail": detail}}]
        else:
            prepared = [p if isinstance(p, Prepared)
                        else SpectrumError(p[0], p[1], source=f.entry.path)
                        for p in f.prepared]
            mine = ({k: v[start:start + n_good] for k, v in outputs.items()}
                    if n_good and outputs is not None else None)
            results = pipeline.encode_response(Upload(b"", f.entry.path), f.spectra, prepared,
                                               mine)
        start += n_good
        rows += rows_from_results(f.entry, f.key, results, pipeline.model)
    return table_from_rows(rows, schema)
