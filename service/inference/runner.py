"""Arrays through an ONNX Runtime session, and nothing else (no HTTP, no queues).

Execution provider: CUDA when onnxruntime-gpu is installed and a GPU is visible (inputs and
outputs bound with IOBinding, so the batch is copied to the device once and nothing is
re-allocated per call), CPU otherwise. ``provider`` reports what the session really uses —
ORT silently falls back to CPU when CUDA cannot initialise, so asking is the only truth.

Thread choices (one session per model version, fed by exactly one batcher, which runs up to
``max_concurrent_batches`` at once — see :func:`auto_concurrent_batches`):
- ``intra_op_num_threads``: 0 = auto = one per CPU this process may use, minus one left to
  the event loop and the decode/preprocess pool (at least 1). ORT's parallel-for waits for
  its slowest thread, so a pool that claims every core stalls whenever the HTTP side needs
  one: on the 2-core bench machine, one ORT thread gave the service 1.6x the throughput of
  two (bench/bench_service.py --intra-op-threads). Set it explicitly on a dedicated box.
- ``inter_op_num_threads = 1`` with sequential execution: the graph is a chain, there is no
  branch parallelism worth a second pool.
- ``session.intra_op.allow_spinning = 0``: ORT's workers otherwise busy-wait after each run,
  burning the cores that decode/preprocess threads (and the event loop) need between batches.
  Costs a few µs of wake-up per batch; measured in bench/bench_service.py.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import onnxruntime as ort

from .repository import ModelError, ModelVersion

Device = Literal["auto", "cpu", "cuda"]


def auto_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) - 1)


def auto_concurrent_batches(runner: OnnxRunner) -> int:
    """As many single-session runs at once as the CPUs hold at the session's intra-op
    threads: one ORT run is a parallel-for that waits for its slowest thread, and a small
    model scales poorly across threads, so two one-thread runs on two cores beat one
    two-thread run (bench/bench_service.py). A GPU runs one batch at a time."""
    if runner.provider == "CUDAExecutionProvider":
        return 1
    return max(1, len(os.sched_getaffinity(0)) // runner.intra_op_threads)


def session_options(intra_op_threads: int = 0) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads or auto_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def choose_providers(device: Device = "auto") -> list[str]:
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError("device=cuda but onnxruntime has no CUDAExecutionProvider "
                           f"(available: {available})")
    return ["CPUExecutionProvider"]


class InferenceError(RuntimeError):
    """ONNX Runtime failed on a batch (bad shape, kernel or device fault). One typed error so
    that callers answer for that batch alone without knowing ORT's exception classes."""


class OnnxRunner:
    """``run({input: array}) -> {output: array}`` on one ONNX Runtime session."""

    def __init__(self, onnx: bytes, *, device: Device = "auto", intra_op_threads: int = 0) -> None:
        providers = choose_providers(device)
        options = session_options(intra_op_threads)
        self.intra_op_threads: int = options.intra_op_num_threads
        try:
            self.session = ort.InferenceSession(
                onnx, sess_options=options, providers=providers)
        except Exception as exc:
            raise ModelError("bad_model", "ONNX Runtime cannot load the graph: "
                             f"{type(exc).__name__}: {str(exc)[:500]}") from exc
        self.provider: str = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._cuda = self.provider == "CUDAExecutionProvider"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            if self._cuda:
                return self._run_iobinding(inputs)
            outs = self.session.run(self.output_names, inputs)
        except Exception as exc:
            raise InferenceError(f"{type(exc).__name__}: {exc}") from exc
        return dict(zip(self.output_names, outs))

    def _run_iobinding(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        binding = self.session.io_binding()
        for name, arr in inputs.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), "cuda", 0)
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))


class ServedVersion:
    """Name, version and execution provider of a loaded model version, for every kind of
    served model (a mixin: the dataclass that uses it declares ``model`` and ``runner``)."""

    model: ModelVersion
    runner: OnnxRunner

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def provider(self) -> str:
        return self.runner.provider
