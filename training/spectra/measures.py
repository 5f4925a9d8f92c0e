"""Measurements that evaluation, the χ² baseline, the Redrock comparison and the conv2d rewrite
all take: the top-class probabilities of label probabilities, σ_NMAD of redshift errors, and
ONNX Runtime's CPU throughput on a graph.

Why a module of its own: the baseline and the rewrite are parts of evaluation, and reaching
up into training/spectra/evaluate.py for these closed an import cycle.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .labels import TOP_CLASSES, TOP_OF_LABEL


def sigma_nmad(d: np.ndarray) -> float:
    """Normalised median absolute deviation (1.4826 × MAD): the redshift precision surveys
    quote, insensitive to the outliers counted separately."""
    return 1.4826 * float(np.median(np.abs(d - np.median(d))))


def top_probs(probs: np.ndarray) -> np.ndarray:
    out = np.zeros((len(probs), len(TOP_CLASSES)))
    for k, t in enumerate(TOP_OF_LABEL):
        out[:, t] += probs[:, k]
    return out


def onnx_throughput(onnx_path: Path, X: np.ndarray, batch: int, repeats: int,
                    threads: int = 2) -> dict[str, float]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    xb = np.resize(X[:batch].astype(np.float32), (batch,) + X.shape[1:])
    sess.run(None, {"spectrum": xb})
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {"spectrum": xb})
        ts.append(time.perf_counter() - t)
    return {"batch": batch, "threads": threads, "spectra_per_s_median": batch / float(np.median(ts)),
            "spectra_per_s_best": batch / float(min(ts)), "repeats": repeats}
