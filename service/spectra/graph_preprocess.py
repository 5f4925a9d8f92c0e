"""The canonical preprocessing (preprocess.py) as data plus an ONNX graph (issue 19, first step).

Why: resampling and normalisation in numpy cost 0.2–0.4 ms of CPU per fibre under one GIL.
Here the input grid's part of the work — edges, ``searchsorted``, overlaps — is done once per
wavelength array and kept as a banded operator (per output pixel: K input indices and their
overlaps, :func:`build_operator`, cached by the grid's bytes); everything per row is
an ONNX graph (:func:`preprocess_graph`) that ONNX Runtime runs in C++ on its own threads. An
exposure whose fibres share one wavelength array is one call over all its rows.

The graph computes in float64, as preprocess.py does, from float32 rows (the dtype readers
decode to); only the final model input is rounded to float32, as preprocess.py rounds it. The
operator's weights are float64 too: float32 overlaps would move the resampled flux by ~1e-7
relative and could flip the 50 %-coverage test of a pixel, beyond the 1e-6 the parity test
allows. preprocess.py stays the readable reference; tests hold the graph to it.

There is no Slice/Pad shortcut for log-λ grids aligned with the model grid. preprocess.py's
input edges are arithmetic midpoints and the grid's are geometric, so even an exact run of
grid pixels gives every output pixel a 2.9e-5 sliver of its neighbour (K = 2). A shortcut
would change the numbers beyond the parity tolerance.

Nothing here is wired into the service yet. This module imports ``onnx`` (the ``train``
extra) to build the graph; it does not import ONNX Runtime (service.spectra must not):
:func:`run_graph` takes any session with ORT's ``run(output_names, feeds)``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .preprocess import CLIP, LogLambdaGrid, pixel_edges

OPSET = 18
INPUTS = ("flux", "ivar", "indices", "weights")
OUTPUTS = ("x", "n_good")
CACHE_SIZE = 64  # distinct input grids kept: a few per survey; each ~130 kB at K = 2


@dataclass(frozen=True, eq=False)
class Operator:
    """The banded flux-conserving rebinning operator from one input grid onto a model grid.

    Output pixel j gets Σ_m q[indices[j, m]]·weights[j, m] for a per-input-pixel quantity q;
    ``weights`` are the overlaps (Å) of input pixel ``indices[j, m]`` with output bin j, the
    output edges first clipped to the input's range (what preprocess.py integrates). Unused
    slots of a row point at input pixel 0 with weight 0.
    """

    indices: np.ndarray  # (npix, K) int64
    weights: np.ndarray  # (npix, K) float64
    n_in: int  # input pixels the rows must have
    coverage: float  # fraction of grid pixels overlapping the input's range (Prepared.coverage)

    @property
    def band(self) -> int:
        return int(self.indices.shape[1])


def _operator(wavelength: np.ndarray, grid: LogLambdaGrid) -> Operator:
    """The overlaps, computed with preprocess.py's expressions (same clipping, same
    ``min(e_{i+1}, b) − max(e_i, a)`` per input pixel), so aligned inputs get its numbers
    exactly."""
    e_in = pixel_edges(wavelength)
    n = e_in.shape[0] - 1
    e_out = grid.edges
    x = np.minimum(np.maximum(e_out, e_in[0]), e_in[-1])
    k = np.minimum(np.searchsorted(e_in, x, side="right") - 1, n - 1)
    ka, kb = k[:-1], np.maximum(k[1:], k[:-1])
    band = int((kb - ka).max()) + 1
    idx = ka[:, None] + np.arange(band)
    used = idx <= kb[:, None]
    idx = np.where(used, idx, 0)
    overlap = (np.minimum(e_in[idx + 1], x[1:, None]) - np.maximum(e_in[idx], x[:-1, None]))
    weights = np.where(used, np.maximum(overlap, 0.0), 0.0)
    lo = max(int(np.searchsorted(e_out, e_in[0], side="right")) - 1, 0)
    hi = min(int(np.searchsorted(e_out, e_in[-1], side="left")), grid.npix)
    return Operator(indices=np.ascontiguousarray(idx, dtype=np.int64),
                    weights=np.ascontiguousarray(weights, dtype=np.float64), n_in=n,
                    coverage=max(hi - lo, 0) / grid.npix)


class OperatorCache:
    """Operators keyed by (wavelength bytes, grid), least recently used evicted first.

    Why the bytes rather than the array's id: the fibres of many requests share a grid by
    value, not by object, and a freed array's id is reused. The dict hashes the bytes and,
    on a hit, compares them, so two grids never share an operator by a hash collision; a
    lookup costs ~15 µs at 4k pixels (a blake2b digest of the same bytes cost ~100 µs here).
    Thread-safe: the service reads from many threads.
    """

    def __init__(self, maxsize: int = CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[bytes, tuple[float, float, int]], Operator] = \
            OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, wavelength: np.ndarray, grid: LogLambdaGrid) -> Operator:
        wave = np.ascontiguousarray(wavelength, dtype=np.float64)
        if wave.ndim != 1 or wave.shape[0] < 2:
            raise ValueError("need a 1D wavelength array of at least 2 pixels")
        key = (wave.tobytes(), (grid.loglam_start, grid.dloglam, grid.npix))
        with self._lock:
            op = self._items.get(key)
            if op is not None:
                self._items.move_to_end(key)
                return op
        op = _operator(wave, grid)  # outside the lock: a miss costs ~1 ms
        with self._lock:
            op = self._items.setdefault(key, op)  # a racing builder's copy wins, if first
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return op


OPERATORS = OperatorCache()


def build_operator(wavelength: np.ndarray, grid: LogLambdaGrid,
                   cache: OperatorCache = OPERATORS) -> Operator:
    """The operator for rows on ``wavelength`` (Å, strictly increasing), from ``cache``."""
    return cache.get(wavelength, grid)


# ---- the graph --------------------------------------------------------------------------------
class _Graph:
    """Node-list builder: fresh names, constants as initializers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value: Any, dtype: Any) -> str:
        self._n += 1
        name = f"c_{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name


def preprocess_graph(grid: LogLambdaGrid) -> onnx.ModelProto:
    """flux, ivar (B, n_in) float32 + an :class:`Operator`'s indices and weights →
    x (B, 2, npix) float32, preprocess.py's model input, and n_good (B,) int64, the good grid
    pixels per row (what ``_verdict`` counts as ``n_good_out``).

    Pixels with non-finite flux or ivar, or ivar ≤ 0, are masked (``make_spectrum``'s rule),
    so a reader's mask travels as ivar = 0. Every op is in ONNX Runtime's CPU EP for double.
    Pixel-major inside ((n, B), rows innermost) and the operator slot-major ((K, npix)): the
    Gather then copies whole rows of B values per index, the Mul broadcasts one weight over
    them and the ReduceSum adds K whole planes; row-major, all three went element by element
    and the graph cost ~2.5x more CPU at 256 rows here. The median is exact (:func:`_scale`).
    """
    g = _Graph()
    f32 = {"to": TensorProto.FLOAT}
    f64 = {"to": TensorProto.DOUBLE}
    # constants of rank 2, as the planes they meet: ORT broadcasts a rank-0 one over an
    # (n, B) plane span by span, B values at a time (~7x slower at B = 1 here)
    zero32, inf32 = g.const([[0.0]], np.float32), g.const([[np.inf]], np.float32)
    zero, one = g.const([[0.0]], np.float64), g.const([[1.0]], np.float64)
    f = g.op("Transpose", "flux", perm=[1, 0])  # (n_in, B)
    iv = g.op("Transpose", "ivar", perm=[1, 0])
    good = g.op("And", g.op("And", g.op("Greater", iv, zero32), g.op("Less", iv, inf32)),
                g.op("Less", g.op("Abs", f), inf32))  # NaN fails every comparison
    # the three per-input-pixel quantities preprocess.py integrates, good, flux·good and
    # var·good, gathered as float32 (exact: they are the input's values) and widened after the
    # Gather: ORT's Transpose of doubles is ~20x slower than of float32 here, and its layout
    # optimizer moves the input Transposes down to the Gather
    q_good = g.op("Cast", good, **f32)
    q_flux = g.op("Where", good, f, zero32)
    q_ivar = g.op("Where", good, iv, inf32)  # var = 1/ivar, +0.0 exactly where masked
    # slot-major operator, (K, npix): the sum over K is then one of K whole (npix, B) planes
    idx = g.op("Transpose", "indices", perm=[1, 0])
    w = g.op("Unsqueeze", g.op("Transpose", "weights", perm=[1, 0]), g.const([2], np.int64))
    k_axis = g.const([0], np.int64)

    def band_sum(q: str, times: int, invert: bool = False) -> str:  # Σ_K q[indices]·w (·w)
        term = g.op("Cast", g.op("Gather", q, idx, axis=0), **f64)  # (K, npix, B)
        if invert:
            term = g.op("Div", one3, term)
        for _ in range(times):  # (var·overlap)·overlap: preprocess.py's order of products
            term = g.op("Mul", term, w)
        return g.op("ReduceSum", term, k_axis, keepdims=0)  # (npix, B)

    one3 = g.const([[[1.0]]], np.float64)
    w_good, f_sum = band_sum(q_good, 1), band_sum(q_flux, 1)
    v_sum = band_sum(q_ivar, 2, invert=True)
    min_w = g.const(grid._min_good_width[:, None], np.float64)
    use = g.op("And", g.op("GreaterOrEqual", w_good, min_w), g.op("Greater", v_sum, zero))
    flux_out = g.op("Where", use, g.op("Div", f_sum, w_good), zero)
    ivar_out = g.op("Where", use, g.op("Div", g.op("Mul", w_good, w_good), v_sum), zero)
    n_good = g.op("ReduceSum", g.op("Cast", use, to=TensorProto.INT64),
                  g.const([0], np.int64), keepdims=0)  # (B,)
    scale = g.op("Unsqueeze", _scale(g, flux_out, use, n_good, grid.npix),
                 g.const([0], np.int64))  # (1, B)
    x0 = g.op("Min", g.op("Max", g.op("Div", flux_out, scale), g.const([[-CLIP]], np.float64)),
              g.const([[CLIP]], np.float64))
    snr2 = g.op("Mul", g.op("Mul", ivar_out, scale), scale)
    x1 = g.op("Div", snr2, g.op("Add", one, snr2))
    axis0 = g.const([0], np.int64)
    x = g.op("Concat", *(g.op("Unsqueeze", g.op("Cast", c, **f32), axis0) for c in (x0, x1)),
             axis=0)  # (2, npix, B)
    g.nodes.append(helper.make_node("Transpose", [x], ["x"], perm=[2, 0, 1]))
    g.nodes.append(helper.make_node("Identity", [n_good], ["n_good"]))
    rows, n_in, k = "rows", "n_in", "band"
    graph = helper.make_graph(
        g.nodes, "specula_preprocess",
        [helper.make_tensor_value_info("flux", TensorProto.FLOAT, [rows, n_in]),
         helper.make_tensor_value_info("ivar", TensorProto.FLOAT, [rows, n_in]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, [grid.npix, k]),
         helper.make_tensor_value_info("weights", TensorProto.DOUBLE, [grid.npix, k])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 2, grid.npix]),
         helper.make_tensor_value_info("n_good", TensorProto.INT64, [rows])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="specula.graph_preprocess")
    model.doc_string = f"grid {grid.to_manifest()}"
    onnx.checker.check_model(model, full_check=True)
    return model


def _scale(g: _Graph, flux_out: str, use: str, n_good: str, npix: int) -> str:
    """(B,) s: median |flux| of the good pixels, else their mean |flux|, else 1.0 — and 1.0
    for a row with no good pixel, whose flux and ivar are all 0 so its input comes out 0, as
    preprocess.py leaves it.

    The median exactly, at a rank that is the same in every row: of a row's masked pixels,
    the first L = c − n_good//2 (c = npix//2) become −1 (below every |flux|) and the rest +inf,
    so ascending, the good value at good rank n_good//2 sits at rank c and (n_good even) the
    one below it at c − 1. One unsorted TopK (the c + 1 smallest, an nth_element: ~80 µs per
    4k-pixel row here, a third of a sorted TopK) and a TopK of 2 of those give both. np.median
    is the mean of the same pair, (lo + hi) / 2, so the result is the same double.
    """
    c = npix // 2
    a = g.op("Transpose", g.op("Abs", flux_out), perm=[1, 0])  # (B, npix)
    masked = g.op("Not", g.op("Transpose", use, perm=[1, 0]))
    axis1 = g.const([1], np.int64)
    rank = g.op("CumSum", g.op("Cast", masked, to=TensorProto.INT64), g.const(1, np.int64))
    two_i = g.const(2, np.int64)
    n_low = g.op("Unsqueeze", g.op("Sub", g.const(c, np.int64), g.op("Div", n_good, two_i)),
                 axis1)
    low = g.op("And", masked, g.op("LessOrEqual", rank, n_low))
    v = g.op("Where", low, g.const([[-1.0]], np.float64),
             g.op("Where", masked, g.const([[np.inf]], np.float64), a))
    smallest = _topk(g, v, c + 1, largest=0, sorted=0)
    top2 = _topk(g, smallest, 2, largest=1, sorted=1)  # (B, 2): ranks c, c − 1
    hi, lo = (g.op("Squeeze", g.op("Slice", top2, g.const([i], np.int64),
                                    g.const([i + 1], np.int64), axis1), axis1) for i in (0, 1))
    odd = g.op("Equal", g.op("Mod", n_good, two_i), g.const(1, np.int64))
    median = g.op("Where", odd, hi, g.op("Div", g.op("Add", lo, hi), g.const(2.0, np.float64)))
    mean = g.op("Div", g.op("ReduceSum", a, axis1, keepdims=0),
                g.op("Cast", n_good, to=TensorProto.DOUBLE))
    zero, one = g.const(0.0, np.float64), g.const(1.0, np.float64)

    def usable(s: str) -> str:  # s > 0 and finite (NaN fails the comparison)
        return g.op("And", g.op("Greater", s, zero), g.op("Less", s, g.const(np.inf, np.float64)))

    has_good = g.op("Greater", n_good, g.const(0, np.int64))
    usable_median = g.op("And", has_good, usable(median))
    return g.op("Where", usable_median, median, g.op("Where", usable(mean), mean, one))


def _topk(g: _Graph, x: str, k: int, **attrs: int) -> str:
    """TopK's values (its indices output is named and left unused)."""
    out = g.op("TopK", x, g.const([k], np.int64), axis=-1, **attrs)
    g.nodes[-1].output.append(out + "_indices")
    return out


class Session(Protocol):
    """What :func:`run_graph` needs of an ``onnxruntime.InferenceSession`` (not imported here:
    service.spectra stays free of ONNX Runtime)."""

    def run(self, output_names: Any, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def run_graph(session: Session, flux: np.ndarray, ivar: np.ndarray, operator: Operator,
              block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x (B, 2, npix) float32, n_good (B,) int64) for rows (B, n_in) on ``operator``'s grid.

    1D rows are taken as one row. Non-float32 rows are converted here (a float64 Spectrum's
    values are rounded to float32: the graph's input is what readers decode). ``block_rows``
    runs the rows in blocks of that many, one session run each (None: all rows in one run).
    Why offer it: every op of the graph makes a pass over (npix, B) doubles, and above ~32
    rows those passes leave the CPU caches; an exposure of 2,436 rows in one run cost 1.3–1.5x
    the CPU per row of 32-row blocks here (bench/bench_graph_preprocess.py). Rows are
    independent, so blocks give the same numbers bit for bit."""
    flux = np.ascontiguousarray(np.atleast_2d(flux), dtype=np.float32)
    ivar = np.ascontiguousarray(np.atleast_2d(ivar), dtype=np.float32)
    if flux.shape != ivar.shape or flux.shape[1] != operator.n_in:
        raise ValueError(f"rows {flux.shape} and {ivar.shape}: expected (B, {operator.n_in})")
    step = block_rows or flux.shape[0]
    parts = [session.run(list(OUTPUTS), dict(zip(INPUTS, (flux[b:b + step], ivar[b:b + step],
                                                          operator.indices, operator.weights))))
             for b in range(0, flux.shape[0], step)]
    if len(parts) == 1:
        return parts[0][0], parts[0][1]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
