"""ONNX Runtime sessions the exporters' parity checks and the tests open: CPU, quiet."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def ort_session(path: Path, threads: int = 1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
