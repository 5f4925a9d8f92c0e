"""Arrays through an ONNX Runtime session, and nothing else (no HTTP, no queues).

Execution provider: CUDA when onnxruntime-gpu is installed and a GPU is visible (inputs and
outputs bound with IOBinding, so the batch is copied to the device once and nothing is
re-allocated per call), CPU otherwise. ``provider`` reports what the session really uses —
ORT silently falls back to CPU when CUDA cannot initialise, so asking is the only truth.

On CUDA (checked on an H200; bench/results/2026-11-26-gpu-h200.md):
- TF32 is off (``use_tf32=0``). With ORT's default (on), Hopper's convolutions round their
  inputs to 10-bit mantissas: the lightcone regressor's served means moved by up to 6e-4
  relative from the CPU's, and one spectrum's probabilities changed by 1e-5 with the size of
  the batch it rode in. With it off, every output of the shipped classifier agreed with the
  CPU session's to 7e-7 at batch sizes 1, 7, 64 and 300.
- every batch is padded to a power-of-two row count, and each of those shapes has its own
  session, made and run once by ``warm_up`` before the version serves. ORT's CUDA Conv
  (cuDNN frontend, onnxruntime/core/providers/cuda/nn/conv.cc, ``UpdateState``) keeps the
  execution plan of the *last* input shape only, and rebuilds every convolution's plan
  whenever a run's shape differs from the previous run's. A dynamic batcher changes the
  shape almost every batch: on the H200, batches of single-spectrum requests at c=32
  alternated between 1 and ~32 rows and took ~0.5 s each inside ORT (raw ORT, one shape over
  and over: 2 ms); at c=1, always one row, they took 1.9 ms. Padding alone did not help
  (consecutive batches still differed); one session per shape means each session always
  sees the same shape. The cost is log2(max batch) + 1 sessions, weights included (~5 MB
  each for the spectrum classifier), and padding rows the GPU has to spare: raw ORT ran
  ~120k spectra/s there, far more than the CPU side can feed it. Checked on an H200
  (bench/results/2026-11-26-gpu-h200-workers.md): under batch shapes that
  change, one session ran 0.24-0.52 s per batch and ~365 rows/s, one session per shape
  2.8-4.3 ms per batch and ~20k rows/s; the service's c=32 single-row rate rose 34 -> ~2.5k
  spectra/s. The same logic runs on CPU in tests/service/inference/test_runner.py.
- inputs and outputs live in device buffers kept per padded shape (``_run_bound``), not
  allocated per batch: ORT's documented IOBinding use.

Thread choices (one session per model version, fed by exactly one batcher, which runs up to
``max_concurrent_batches`` at once — see :func:`auto_concurrent_batches`):
- ``intra_op_num_threads``: 0 = auto = one per CPU this process may use, minus one left to
  the event loop and the decode/preprocess pool (at least 1): the layout for one caller
  running one batch at a time (the offline archive path). The service passes 1 instead
  (kinds/spectrum.py) and runs as many batches at once as there are CPUs. ORT's parallel-for
  waits for its slowest thread, and this small model scales poorly across threads: on the 2-core
  bench machine one ORT thread gave the service 1.6x the throughput of two
  (bench/bench_service.py --intra-op-threads), and on the 16-CPU GPU host raw ORT ran 2.9k
  spectra/s as one 15-thread session against 11.5k as 16 one-thread runs at once.
- ``inter_op_num_threads = 1`` with sequential execution: the graph is a chain, there is no
  branch parallelism worth a second pool.
- ``session.intra_op.allow_spinning = 0``: ORT's workers otherwise busy-wait after each run,
  burning the cores that decode/preprocess threads (and the event loop) need between batches.
  Costs a few µs of wake-up per batch; measured in bench/bench_service.py.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Literal

import numpy as np
import onnxruntime as ort

from .repository import ModelError

log = logging.getLogger("specula.runner")
Device = Literal["auto", "cpu", "cuda"]

CUDA = "CUDAExecutionProvider"
# see the module docstring: fp32 convolutions as on CPU; the algorithm search stays ORT's
# default, paid by each per-shape session once, at warm-up
CUDA_OPTIONS = {"use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"}
ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
               "tensor(double)": np.float64, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def auto_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) - 1)


def auto_concurrent_batches(runner: OnnxRunner) -> int:
    """As many single-session runs at once as the CPUs hold at the session's intra-op
    threads: one ORT run is a parallel-for that waits for its slowest thread, and a small
    model scales poorly across threads, so two one-thread runs on two cores beat one
    two-thread run (bench/bench_service.py). A GPU runs one batch at a time.

    Not divided among ``--workers`` processes: the kernel spreads connections by hash, so
    with few clients one worker may hold all of them, and with its share of the CPUs alone it
    left the rest idle (2 workers on 2 cores, 2 exposure clients on one worker: 0.25 of raw
    ORT against 0.37 at the worst with every CPU allowed to each worker;
    bench/results/2026-11-26-cpu-service-workers.md)."""
    if runner.provider == CUDA:
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


def row_spec(arg: ort.NodeArg) -> tuple[tuple[int, ...], type] | None:
    """(shape after the batch axis, numpy dtype) of a graph input or output whose first axis
    is the dynamic batch and whose other axes are fixed; None for any other: only those can
    be padded, warmed and bound into per-shape buffers."""
    shape, dtype = arg.shape, ONNX_DTYPES.get(arg.type)
    if not shape or isinstance(shape[0], int) or dtype is None \
            or not all(isinstance(d, int) for d in shape[1:]):
        return None
    return tuple(shape[1:]), dtype


def bucket_rows(n: int) -> int:
    """The power of two ≥ ``n`` a CUDA batch of ``n`` rows is padded to."""
    return 1 << max(0, n - 1).bit_length()


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with zero rows appended up to ``rows`` (one copy, only when needed)."""
    if x.shape[0] == rows:
        return x
    out = np.empty((rows, *x.shape[1:]), x.dtype)
    out[:x.shape[0]] = x
    out[x.shape[0]:] = 0
    return out


def choose_providers(device: Device = "auto") -> list:
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and CUDA in available:
        preload_cuda_libraries()
        return [(CUDA, CUDA_OPTIONS), "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError("device=cuda but onnxruntime has no CUDAExecutionProvider "
                           f"(available: {available})")
    return ["CPUExecutionProvider"]


_preloaded = False


def preload_cuda_libraries() -> None:
    """Load CUDA, cuBLAS and cuDNN from the ``nvidia-*`` pip packages (or PyTorch's) before
    the first CUDA session. onnxruntime-gpu's CUDA provider links against them by soname,
    and a pip-installed CUDA is never on the loader's path: without this the session falls
    back to CPU with only a log line, unless LD_LIBRARY_PATH was set by hand.
    ``onnxruntime.preload_dlls`` is ORT's own facility for exactly this (1.21+)."""
    global _preloaded
    preload = getattr(ort, "preload_dlls", None)
    if _preloaded or preload is None:
        return
    _preloaded = True
    try:
        preload()
    except Exception as exc:  # noqa: BLE001 — the session then reports provider=CPU
        log.warning("onnxruntime.preload_dlls failed: %s: %s", type(exc).__name__, exc)


class InferenceError(RuntimeError):
    """ONNX Runtime failed on a batch (bad shape, kernel or device fault). One typed error so
    that callers answer for that batch alone without knowing ORT's exception classes."""


class OnnxRunner:
    """``run({input: array}) -> {output: array}`` on one ONNX Runtime session."""

    def __init__(self, onnx: bytes, *, device: Device = "auto", intra_op_threads: int = 0,
                 warm_rows: int = 0, iobinding: bool | None = None,
                 session_per_shape: bool | None = None) -> None:
        providers = choose_providers(device)
        options = session_options(intra_op_threads)
        self.intra_op_threads: int = options.intra_op_num_threads
        self._new_session = lambda: ort.InferenceSession(onnx, sess_options=options,
                                                         providers=providers)
        try:
            self.session = self._new_session()
        except Exception as exc:
            raise ModelError("bad_model", "ONNX Runtime cannot load the graph: "
                             f"{type(exc).__name__}: {str(exc)[:500]}") from exc
        self.provider: str = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._cuda = self.provider == CUDA
        # IOBinding: on CUDA always; elsewhere only when asked (the tests run the CUDA path's
        # padding and buffer logic on CPU, where CI has no GPU)
        self._bound = self._cuda if iobinding is None else iobinding
        # one session per padded batch shape on CUDA (see the module docstring); the tests
        # ask for it on CPU too
        self.session_per_shape: bool = (self._cuda if session_per_shape is None
                                        else session_per_shape)
        self._sessions: dict[int, ort.InferenceSession] = {}
        self._io_device = "cuda" if self._cuda else "cpu"
        self._buffers: dict[tuple, ort.OrtValue] = {}
        self._bound_lock = threading.Lock()
        # outputs without a row_spec (a fixed first dimension, a scalar) are bound by device
        # and sized by ORT
        self._output_specs = {o.name: row_spec(o) for o in self.session.get_outputs()}
        if self._cuda and warm_rows:
            self.warm_up(warm_rows)

    def warm_up(self, max_rows: int) -> None:
        """Run every padded batch shape up to ``max_rows`` once, so that each shape's session
        is made and its cuDNN plans built here (at load, before the version serves) and not
        inside a request. Skipped for graphs with other dynamic dimensions than the batch:
        their shapes are not known until requests arrive."""
        specs = {i.name: row_spec(i) for i in self.session.get_inputs()}
        if None in specs.values():
            return
        rows = 1
        while True:
            self.run({name: np.zeros((rows, *rest), dtype)
                      for name, (rest, dtype) in specs.items()})
            if rows >= max_rows:
                return
            rows *= 2

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            if self._bound:
                return self._run_bound(inputs)
            outs = self.session.run(self.output_names, inputs)
        except Exception as exc:
            raise InferenceError(f"{type(exc).__name__}: {exc}") from exc
        return dict(zip(self.output_names, outs))

    def _run_bound(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run through IOBinding, into device buffers kept per padded shape.

        Each input and output of a shape gets one device buffer, allocated on first use and
        reused after: no device allocation per batch, and every run of a shape reads and
        writes the same addresses (what IOBinding is meant for, and what CUDA graphs would
        need). The input is copied in (``update_inplace``), the outputs out. The buffers are
        the runner's, so runs are serialised; a GPU runs one batch at a time anyway.
        Inputs that are not row-aligned (different leading dimensions) run unpadded, with
        buffers made for that one call."""
        lead = {arr.shape[0] if arr.ndim else None for arr in inputs.values()}
        n = lead.pop() if len(lead) == 1 else None
        rows = bucket_rows(n) if n is not None else 0
        with self._bound_lock:
            session = self._session_for(rows)
            binding = session.io_binding()
            for name, arr in inputs.items():
                arr = np.ascontiguousarray(pad_rows(arr, rows) if rows else arr)
                value = (self._buffer(("in", name, arr.shape, arr.dtype.str)) if rows
                         else ort.OrtValue.ortvalue_from_shape_and_type(
                             arr.shape, arr.dtype, self._io_device, 0))
                value.update_inplace(arr)
                binding.bind_ortvalue_input(name, value)
            for name in self.output_names:
                spec = self._output_specs[name]
                if rows and spec is not None:
                    rest, dtype = spec
                    key = ("out", name, (rows, *rest), np.dtype(dtype).str)
                    binding.bind_ortvalue_output(name, self._buffer(key))
                else:
                    binding.bind_output(name, self._io_device, 0)
            session.run_with_iobinding(binding)
            outs = binding.copy_outputs_to_cpu()
        if rows:
            outs = [o[:n] if o.ndim and o.shape[0] == rows else o for o in outs]
        return dict(zip(self.output_names, outs))

    def _session_for(self, rows: int) -> ort.InferenceSession:
        """The session that runs batches of ``rows`` padded rows (0: unpadded, the main one)."""
        if not (self.session_per_shape and rows):
            return self.session
        session = self._sessions.get(rows)
        if session is None:
            session = self._sessions[rows] = self._new_session()
        return session

    def _buffer(self, key: tuple) -> ort.OrtValue:
        """The device buffer for (direction, name, shape, dtype), made on first use."""
        value = self._buffers.get(key)
        if value is None:
            _, _, shape, dtype = key
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                list(shape), np.dtype(dtype).type, self._io_device, 0)
            self._buffers[key] = value
        return value

