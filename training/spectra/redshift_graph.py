"""Redrock's linear algebra inside the ONNX graph: χ²(z) of a class's eigen-templates.

Why (issue 17): a head on globally pooled CNN features cannot localise a line, so the served
network's redshift is unusable (galaxy σ_NMAD 0.039 on real SDSS spectra, template fitting
2.3e-5). This module builds, with onnx.helper, the fit training/spectra/baseline.py does in numpy:
for each class (GALAXY: 4 SDSS eigenspectra + 3 Legendre terms, QSO: 4 eigenspectra +
``qso_n_poly`` Legendre terms, 0 by default, 3 served), at every
trial redshift, the linear amplitudes from the normal equations and the χ² that goes with
them; then the argmin refined by a parabola, σ_z from the curvature, and a warning bitmask.

On the model grid (Δlog10 λ = 1e-4) a redshift is a whole-pixel shift s = log10(1+z)/Δ, so
every normal-equation term Σ_p w·Tₐ·T_b(p − s) and Σ_p w·f·Tₐ(p − s) is a cross-correlation of
an observed-frame signal (w, w·Pᵢ, w·f) with a rest-frame kernel (Tₐ, Tₐ·T_b).

How, and why not FFTs: ONNX Runtime's CPU ``DFT`` runs at ~1.5 GFLOP/s (35 µs per 1024-point
transform on 2 threads; measured), so the ~30 long FFTs per spectrum would allow ~100
spectra/s. Its SGEMM runs at ~230 GFLOP/s, so every correlation here is a MatMul against a
Toeplitz matrix of template values, in two stages (Redrock's own coarse-then-refine):

1. coarse: w and w·f summed over bins of ``coarse_bin`` pixels (8 for galaxies, 16 for
   quasars, whose lines are thousands of km/s wide), shifts every ``coarse_bin`` pixels: the
   exact χ² of a model whose templates and polynomials are constant over each bin, so its
   normal equations stay positive definite.
2. fine: around the ``n_candidates`` best separated local minima of the coarse curve (2 for
   galaxies, 1 for quasars), the exact full-resolution χ² at every pixel shift within
   ±``half_window``: each spectrum's w and w·f are gathered (in whole coarse blocks) into the
   rest frame of its candidate, where one Toeplitz matrix serves all spectra; the first
   FOLD_POLY Legendre terms are folded into that matrix (see _poly_cross_terms), any further
   ones gathered like w·f.

The normal equations (K = 4 to 4 + n_poly unknowns) are solved per shift by an unrolled LDLᵀ over
(batch, shifts) tensors with a small ridge. In the coarse stage, whose hundreds of shifts made
that solve a quarter of the served graph's time, the shift-free polynomials are eliminated once
per spectrum first, leaving a K × K solve per shift (_coarse_chi2). The Toeplitz matrices are built in the graph from
the compact templates (Expand/Reshape/Slice), so the file stays small and ONNX Runtime folds
them into constants when the session is created.

z_warning bits: 1 = a second, separate χ² minimum within Δχ² < ``delta_chi2_warn`` (the
redshift is ambiguous); 2 = poor fit (χ²/dof > ``rchi2_warn``); 4 (fused graph only) = no χ²
fit: STAR, whose z is 0 (the velocity prior) rather than the network's.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.spectra import DEFAULT_GRID
from service.spectra.preprocess import LogLambdaGrid
from service.spectra.zwarning import Z_WARNING_BIT

from .baseline import RestSet, legendre, redshift_sets
from .labels import TOP_CLASSES, TOP_OF_LABEL

C_KMS = 299792.458
LN10 = math.log(10.0)
OPSET = 18  # the shipped classifier's opset; every op used here is in ONNX Runtime's CPU EP
BIG = 1e30  # χ² of excluded shifts (float32-safe, compares above any real χ²)
# the service names the bits (service.spectra.zwarning.Z_WARNING_BITS); one truth
WARN_AMBIGUOUS, WARN_POOR_FIT = Z_WARNING_BIT["z_ambiguous"], Z_WARNING_BIT["z_poor_fit"]
WARN_NO_FIT, WARN_NO_SIGNAL = Z_WARNING_BIT["z_no_fit"], Z_WARNING_BIT["z_no_signal"]


@dataclass(frozen=True)
class RedshiftGraphConfig:
    """Search knobs (data: stored as JSON in the graph's metadata, key ``redshift_graph``)."""

    # pixels per coarse bin and coarse shift step (8 px ≈ 550 km/s; quasar lines are
    # thousands of km/s wide, so 16 px loses nothing there and costs 4x less)
    coarse_bin: dict[str, int] = field(default_factory=lambda: {"GALAXY": 8, "QSO": 16})
    # fine shifts ±W pixels around each coarse candidate (≥ D/2 + 1: the parabola needs both sides)
    half_window: dict[str, int] = field(default_factory=lambda: {"GALAXY": 5, "QSO": 9})
    # separated coarse minima refined at full resolution; the next one is judged on the coarse
    # curve for z_warning. Galaxies: with 2, no spectrum of 272 simulated was wrong where the
    # baseline was right (1: 9 were); quasars' broad lines leave no such doubt (2 either way)
    n_candidates: dict[str, int] = field(default_factory=lambda: {"GALAXY": 2, "QSO": 1})
    # diagonal ridge relative to trace(A): float32 stability; it moves χ² by ~ridge·Σw·f²
    # (1e-6: 4e-5, 1e-7: 7e-6, 1e-8: 4e-6 = float32 rounding, on 110 simulated spectra)
    ridge: float = 1e-7
    delta_chi2_warn: float = 9.0  # a second minimum closer than this in χ² is ambiguous
    rchi2_warn: float = 25.0  # χ²/dof above this is a poor fit (~p90 of right-class fits, sims)
    # minimum separation of a second minimum (km/s): quasar χ² basins are broad
    dv_second_kms: dict[str, float] = field(
        default_factory=lambda: {"GALAXY": 1000.0, "QSO": 3000.0})
    star_z_sigma: float = 1e-3  # fused graph: σ of the z = 0 prior for stars (~300 km/s)
    # fused graph: σ_z = σ_curvature · √max(χ²/dof, 1) · scale[class]. The curvature assumes
    # the templates are exact and the noise is as stated; template mismatch shows as χ²/dof > 1
    # (the usual inflation), and what remains is calibrated on simulated validation spectra
    # (fit_sigma_scale) so that the 1σ interval holds 68 % of them
    z_sigma_scale: dict[str, float] = field(
        default_factory=lambda: {"GALAXY": 1.0, "QSO": 1.0})
    curves: bool = False  # also output the fine χ² curves and their shifts (tests, plots)
    # observed-frame bands (vacuum Å) left out of the fit. The O₂ A and B bands are where
    # telluric-correction residuals sit in real spectra; a residual trough there lines up with
    # a template feature at one redshift and pulls fits to it (simulated galaxies: 15 % outliers
    # at S/N 20, 45 % of them at z ≈ 0.165, Hα on the A band; 0.5 % with telluric residuals
    # off). Empty by default so that the graph matches baseline.py exactly (tests); the served
    # graph sets it (training/spectra/fuse_redshift.py, TELLURIC_BANDS)
    mask_bands: tuple[tuple[float, float], ...] = ()
    # Legendre terms in the quasar fit. baseline.py fits none, because there the least χ²
    # across classes picks the class and polynomials let quasar templates fit galaxies. In the
    # fused graph the network picks the class, so the quasar fit may absorb what the
    # eigenspectra cannot: spectrophotometric tilt, dust, the Lyα forest's mean depression.
    # 3 terms on 2,000 simulated validation quasars: outliers 14.9 % → 6.7 %, σ_NMAD
    # 3.1e-3 → 2.0e-3. 5 terms (numpy baseline, robust weights): outliers 3.0 % → 2.3 %.
    # 0 by default so that the graph matches baseline.py (tests)
    qso_n_poly: int = 0
    # fused graph: "no signal" when the best galaxy or quasar fit lowers χ² below the null model
    # (zero flux, Σw·f²) by less than this. Pure Gaussian noise, best of every shift and 4-7
    # free amplitudes: Δχ² ≤ 186 over 200 noise spectra (p50 126); the faintest simulated
    # spectra (S/N 1-1.5 per pixel): Δχ² ≥ 4,856 for 99 % (models/spectrum_classifier/3)
    no_signal_dchi2: float = 1000.0
    # robust fit: pixels further than this many σ from the running median of 5 pixels get no
    # weight in the fit (0 = off). Cosmic-ray hits (5–50σ, single pixels) that the pipeline did
    # not flag, and sharp sky-subtraction residuals, are what it removes: at low S/N one such
    # spike under an emission line of a wrong redshift outweighs the whole continuum. On 600
    # simulated validation galaxies (all S/N) the exact fit's outliers fell from 25.5 % to 3.7 %
    # (S/N < 3: 58 % → 9 %), quasars (3 Legendre terms) from 9.3 % to 3.0 %, with σ_NMAD of the
    # good fits unchanged and no outlier added at S/N ≥ 10. Lines stay: even a narrow line
    # spans ≥ 3 pixels at R ≈ 2000 on this grid, so the median follows it. Off by default so
    # that the graph matches baseline.py exactly (tests); the served graph sets 5
    spike_sigma: float = 0.0


# ---------------------------------------------------------------------------- graph builder
class _Graph:
    """Nodes and initializers under construction, uniquely named under one prefix."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes, self.inits, self._n = prefix, [], [], 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}{hint}_{self._n}"

    def op(self, op_type: str, *inputs: str, n_out: int = 1, out: str | None = None,
           **attrs) -> str | list[str]:
        outs = [out] if out else [self.name(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self.name("node_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=np.float32, hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def i64(self, *values: int) -> str:
        return self.const(list(values), np.int64, "i")

    # elementwise shorthands: the LDLᵀ below is ~200 of these
    def add(self, a, b): return self.op("Add", a, b)
    def sub(self, a, b): return self.op("Sub", a, b)
    def mul(self, a, b): return self.op("Mul", a, b)
    def div(self, a, b): return self.op("Div", a, b)

    def take(self, x: str, index: int, axis: int) -> str:
        """x[..., index, ...] with that axis removed."""
        return self.op("Gather", x, self.const(index, np.int64, "idx"), axis=axis)

    def reshape(self, x: str, *shape: int) -> str:
        return self.op("Reshape", x, self.i64(*shape))


# ------------------------------------------------------------------------- template tables
@dataclass(frozen=True)
class ClassTables:
    """What one class's search needs, precomputed from its aligned templates."""

    name: str
    D: int  # coarse bin / step (pixels)
    W: int  # fine half window (pixels)
    n_cand: int  # candidates refined
    K: int  # templates
    n_poly: int  # Legendre terms fitted alongside
    s_min: int
    s_max: int
    coarse_T: np.ndarray  # (K, L) Toeplitz-generating vectors: binned templates
    coarse_TT: np.ndarray  # (K(K+1)/2, L) products of binned templates
    n_bins: int
    n_coarse: int  # coarse shifts s_min + D·k, k < n_coarse
    fine_T: np.ndarray  # (K, L') the same for the fine stage's rest-frame rows
    fine_TT: np.ndarray  # (K(K+1)/2, L')
    n_rows: int  # rest-frame rows of the fine stage (npix + S − 1, rounded up to D)
    k_max: int  # last coarse index whose shift is ≤ s_max (candidates are clamped to it)
    lead: int  # fine gather: zeros put before the signal so blocks align with D·k shifts
    n_blocks: int  # fine gather: D-pixel blocks holding the (led) signal; one zero block follows
    dv_px: float  # second-minimum separation in pixels


def pairs(K: int) -> list[tuple[int, int]]:
    """Template pairs (a ≤ b): the distinct Tₐ·T_b kernels of the symmetric A."""
    return [(a, b) for a in range(K) for b in range(a, K)]


def _padded(T: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """T[:, idx] with zeros outside the template (shifts beyond the table contribute nothing)."""
    ok = (idx >= 0) & (idx < T.shape[1])
    return np.where(ok, T[:, np.clip(idx, 0, T.shape[1] - 1)], 0.0)


def toeplitz_vector(kernel_at, rows: int, cols: int) -> np.ndarray:
    """v with v[(c − r) mod L] = kernel_at(r − c), L = rows + cols: what _toeplitz expands.

    ``kernel_at(m)`` gives the (k, len(m)) kernel values at offsets m = row − column. A tall
    matrix (rows > cols) is built as its transpose, so the in-graph expansion (k·min·L values)
    stays small.
    """
    if rows > cols:
        return toeplitz_vector(lambda m: kernel_at(-m), cols, rows)
    L = rows + cols
    i = np.arange(L)
    m = np.where(i < cols, -i, L - i)
    return kernel_at(m)


def class_tables(name: str, rs: RestSet, grid: LogLambdaGrid,
                 cfg: RedshiftGraphConfig) -> ClassTables:
    """Coarse (binned) and fine (full-resolution) kernels of one class, as Toeplitz vectors.

    Coarse: the matrix entry [bin p', shift k] is the template averaged over the rest pixels
    that bin p' sees at shift s = s_min + D·k, i.e. Tb(p' − k) with
    Tb(m) = mean_r T(D·m + r + J0 − s_min). Products of binned templates (not binned products)
    keep the coarse normal equations those of one piecewise-constant model. (A's terms cannot
    be interpolated between coarser shifts: χ² = Σwf² − bᵀA⁻¹b is a small difference of large
    numbers, and linear interpolation over 32 px moved it by tens — more than faint spectra's
    signal.)
    Fine: row r' of a spectrum gathered at candidate s_c holds its pixel p = r' + s_c − s_max,
    and the entry [r', j] (shift s_c + j − W) is T(q0 + r' − j) with q0 = J0 − s_max + W.
    """
    D, W = cfg.coarse_bin[name], cfg.half_window[name]
    K = rs.T.shape[0]
    n_bins = -(-grid.npix // D)
    S1 = rs.s_max - rs.s_min
    n_coarse = -(-S1 // D) + 1
    n_rows = -(-(grid.npix + S1) // D) * D
    k_max = S1 // D
    pp = pairs(K)

    def binned(m):  # (K, len(m))
        idx = D * m[:, None] + np.arange(D)[None, :] + rs.J0 - rs.s_min
        return _padded(rs.T, idx.ravel()).reshape(K, len(m), D).mean(-1)

    def fine(m):
        return _padded(rs.T, m + rs.J0 - rs.s_max + W)

    def products(kern):
        return lambda m: np.stack([kern(m)[i] * kern(m)[j] for i, j in pp])

    dv = cfg.dv_second_kms[name] / C_KMS / LN10 / grid.dloglam
    return ClassTables(
        name=name, D=D, W=W, n_cand=cfg.n_candidates[name], K=K, n_poly=rs.n_poly,
        s_min=rs.s_min, s_max=rs.s_max,
        coarse_T=toeplitz_vector(binned, n_bins, n_coarse),
        coarse_TT=toeplitz_vector(products(binned), n_bins, n_coarse),
        n_bins=n_bins, n_coarse=n_coarse,
        fine_T=toeplitz_vector(fine, n_rows, 2 * W + 1),
        fine_TT=toeplitz_vector(products(fine), n_rows, 2 * W + 1),
        n_rows=n_rows, k_max=k_max, lead=S1 % D, n_blocks=-(-(grid.npix + S1 % D) // D),
        dv_px=float(dv))


# ---------------------------------------------------------------------------- graph pieces
def _toeplitz(g: _Graph, v: np.ndarray, rows: int, cols: int) -> str:
    """(rows, k·cols) matrix [r, (i, c)] = v[i, (c − r) mod L], built in-graph from v (k, L).

    Trick: k copies of v repeated ``rows`` times and re-read with row stride L − 1 shift each
    row by one; all inputs are constants, so ONNX Runtime folds this at session creation and
    the file holds only v.
    """
    k, L = v.shape
    r, c = min(rows, cols), max(rows, cols)  # tall: build the (wide) transpose, see toeplitz_vector
    x = g.op("Expand", g.op("Unsqueeze", g.const(v), g.i64(1)), g.i64(k, r, L))
    x = g.op("Slice", g.reshape(x, k, r * L), g.i64(0), g.i64(r * (L - 1)), g.i64(1))
    x = g.op("Slice", g.reshape(x, k, r, L - 1), g.i64(0), g.i64(c), g.i64(2))  # (k, r, c)
    perm = [1, 0, 2] if rows <= cols else [2, 0, 1]
    return g.reshape(g.op("Transpose", x, perm=perm), rows, k * cols)


def band_mask(bands: tuple[tuple[float, float], ...], grid: LogLambdaGrid) -> np.ndarray:
    """1 outside the observed-frame ``bands`` (Å), 0 inside, on the model grid."""
    lam = 10.0 ** (grid.loglam_start + grid.dloglam * np.arange(grid.npix))
    keep = np.ones(grid.npix, np.float32)
    for lo, hi in bands:
        keep[(lam >= lo) & (lam <= hi)] = 0.0
    return keep


def _median5(g: _Graph, x: str, npix: int) -> str:
    """(B, npix) running median over 5 pixels, edges repeated (scipy's median_filter, mode
    "nearest"): the median of (a, b, c, d, e) is e clamped to [min(p, q), max(p, q)] with
    p = max(min(a, b), min(c, d)) and q = min(max(a, b), max(c, d)) — ten elementwise ops, where
    ONNX has no median and TopK over a (B, npix, 5) stack would copy."""
    padded = g.op("Pad", x, g.i64(0, 2, 0, 2), mode="edge")
    a, b, c, d, e = (g.op("Slice", padded, g.i64(i), g.i64(i + npix), g.i64(1))
                     for i in range(5))
    p = g.op("Max", g.op("Min", a, b), g.op("Min", c, d))
    q = g.op("Min", g.op("Max", a, b), g.op("Max", c, d))
    return g.op("Max", g.op("Min", p, q), g.op("Min", g.op("Max", p, q), e))


def _spike_free(g: _Graph, f: str, w: str, k: float, npix: int) -> str:
    """w with 0 where |f − median5(f)|·√w > k (RedshiftGraphConfig.spike_sigma explains why)."""
    r = g.mul(g.op("Abs", g.sub(f, _median5(g, f, npix))), g.op("Sqrt", w))
    return g.op("Where", g.op("Greater", r, g.const(k)), g.const(0.0), w)


def _inputs(g: _Graph, spectrum: str, mask: np.ndarray | None = None, spike_sigma: float = 0.0,
            npix: int = 0) -> dict[str, str]:
    """Flux f and w = ivar·s² = w'/(1 − w') from the model input, as baseline._fit has them
    (times the band mask, where one is set; without the spikes, where spike_sigma is)."""
    f = g.take(spectrum, 0, 1)
    wt = g.op("Clip", g.take(spectrum, 1, 1), g.const(0.0), g.const(0.999))
    w = g.div(wt, g.sub(g.const(1.0), wt))
    if mask is not None:
        w = g.mul(w, g.const(mask[None, :]))
    if spike_sigma > 0:
        w = _spike_free(g, f, w, spike_sigma, npix)
    wf = g.mul(w, f)
    return {"f": f, "w": w, "wf": wf,
            "wff": g.op("ReduceSum", g.mul(wf, f), g.i64(1), keepdims=1),  # (B, 1)
            "n_good": g.op("ReduceSum", g.op("Cast", g.op("Greater", w, g.const(0.0)),
                                              to=TensorProto.FLOAT), g.i64(1), keepdims=1)}


def _shift_free_terms(g: _Graph, w: str, wf: str, P: np.ndarray) -> tuple[str, str]:
    """Σ w·Pᵢ·Pⱼ (B, n, n) and Σ w·f·Pᵢ (B, n): the polynomial block, the same at every shift."""
    n = P.shape[0]
    PP = np.einsum("ip,jp->pij", P, P).reshape(P.shape[1], n * n)
    return g.reshape(g.op("MatMul", w, g.const(PP)), -1, n, n), g.op("MatMul", wf, g.const(P.T))


def _binned(g: _Graph, x: str, D: int, n_bins: int, npix: int) -> str:
    """(B, n_bins): x (B, npix) summed over bins of D pixels (zero-padded at the red end)."""
    pad = n_bins * D - npix
    x = g.op("Pad", x, g.i64(0, 0, 0, pad)) if pad else x
    return g.op("ReduceSum", g.reshape(x, -1, n_bins, D), g.i64(2), keepdims=0)


def _add_poly_block(g: _Graph, A: dict, b: list, App: str | None, bP: str | None, K: int,
                    nP: int, rank: int) -> None:
    """Put Σ w·Pᵢ·Pⱼ and Σ w·f·Pᵢ (B, …) into A and b, shaped (B, 1, …) to broadcast over
    entries of rank ``rank`` + 1."""
    ones = (1,) * rank
    for i in range(nP):
        row = g.take(App, i, 1)
        for j in range(i + 1):
            A[(K + i, K + j)] = g.reshape(g.take(row, j, 1), -1, *ones)
        b.append(g.reshape(g.take(bP, i, 1), -1, *ones))


def _chi2_ldl(g: _Graph, A: dict, b: list, wff: str, ridge: float) -> str:
    """χ² = Σ w f² − bᵀA⁻¹b per shift, by an unrolled LDLᵀ (elementwise over all shifts at once).

    bᵀA⁻¹b = Σᵢ yᵢ²/dᵢ with L y = b (L unit lower triangular). A ridge ε·trace(A) on the
    diagonal, and dᵢ ≥ that ε, keep float32 sane where templates barely overlap the data
    (extreme quasar redshifts) — the baseline does the same with 1e-9 in float64.
    """
    n = len(b)
    tr = A[(0, 0)]
    for i in range(1, n):
        tr = g.add(tr, A[(i, i)])
    eps = g.add(g.mul(tr, g.const(ridge)), g.const(1e-30))
    d, L, E = [], {}, {}
    for j in range(n):
        dj = g.add(A[(j, j)], eps)
        for k in range(j):
            dj = g.sub(dj, g.mul(L[(j, k)], E[(j, k)]))
        d.append(g.op("Max", dj, eps))
        inv = g.op("Reciprocal", d[j])
        for i in range(j + 1, n):
            e = A[(i, j)]
            for k in range(j):
                e = g.sub(e, g.mul(E[(i, k)], L[(j, k)]))
            E[(i, j)] = e
            L[(i, j)] = g.mul(e, inv)
    q = None
    y = []
    for i in range(n):
        yi = b[i]
        for k in range(i):
            yi = g.sub(yi, g.mul(L[(i, k)], y[k]))
        y.append(yi)
        term = g.div(g.mul(yi, yi), d[i])
        q = term if q is None else g.add(q, term)
    return g.sub(wff, q)


def _cholesky_inverse(g: _Graph, G: str, n: int, ridge: float) -> str:
    """(B, n, n) R⁻¹ for G = R·Rᵀ (R lower triangular), G (B, n, n) symmetric positive
    semi-definite: unrolled on (B, 1) entries, so it costs ~n³ tiny ops per batch, not per
    shift. Pivots are kept ≥ ridge·trace(G) (a spectrum with no weight gets a finite R⁻¹, and
    w·Q = 0 then)."""
    e = {(i, j): g.take(g.take(G, i, 1), j, 1) for i in range(n) for j in range(i + 1)}  # (B,)
    e = {k: g.op("Unsqueeze", v, g.i64(1)) for k, v in e.items()}  # (B, 1)
    tr = e[(0, 0)]
    for i in range(1, n):
        tr = g.add(tr, e[(i, i)])
    eps = g.add(g.mul(tr, g.const(ridge)), g.const(1e-30))
    R, inv_diag = {}, []
    for j in range(n):
        d = e[(j, j)]
        for k in range(j):
            d = g.sub(d, g.mul(R[(j, k)], R[(j, k)]))
        R[(j, j)] = g.op("Sqrt", g.op("Max", d, eps))
        inv_diag.append(g.op("Reciprocal", R[(j, j)]))
        for i in range(j + 1, n):
            x = e[(i, j)]
            for k in range(j):
                x = g.sub(x, g.mul(R[(i, k)], R[(j, k)]))
            R[(i, j)] = g.mul(x, inv_diag[j])
    M = {}
    zero = g.const([[0.0]])
    for i in range(n):
        M[(i, i)] = inv_diag[i]
        for j in range(i - 1, -1, -1):
            x = g.mul(R[(i, j)], M[(j, j)])
            for k in range(j + 1, i):
                x = g.add(x, g.mul(R[(i, k)], M[(k, j)]))
            M[(i, j)] = g.mul(g.sub(zero, x), inv_diag[i])
    rows = [g.op("Concat", *[M[(i, j)] if j <= i else g.op("Mul", M[(i, i)], zero)
                             for j in range(n)], axis=1) for i in range(n)]
    return g.op("Concat", *[g.op("Unsqueeze", r, g.i64(1)) for r in rows], axis=1)


def _coarse_chi2(g: _Graph, t: ClassTables, inp: dict, P: np.ndarray,
                 cfg: RedshiftGraphConfig, npix: int) -> str:
    """(B, n_coarse) χ² at every D-th shift of the model whose templates and polynomials are
    constant over each D-pixel bin: the exact χ² of that model (so its normal equations stay
    positive definite) from w and w·f summed per bin. Candidates only: the fine stage
    recomputes everything exactly at full resolution.

    The polynomials do not depend on the shift, so they are eliminated once per spectrum, not
    at every shift (why: the per-shift LDLᵀ over K + n_poly unknowns was a quarter of the
    served graph's time, ~n³/3 elementwise ops over (B, shifts)). Per spectrum, Q = R⁻¹·P with
    Σ w·Q·Qᵀ = 1 (Cholesky of the polynomial block), c = Σ w·f·Q, and f's residual after its
    polynomial fit gives b' = Σ w·(f − Σ cᵢQᵢ)·Tₐ. Per shift only the templates' Schur
    complement S = A_TT − C·Cᵀ (C = Σ w·Q·Tₐ) is solved, K × K:
    χ² = Σ w·f² − |c|² − b'ᵀ·S⁻¹·b', the same number as the joint solve.
    """
    D, nP, K = t.D, t.n_poly, t.K
    wb, wfb = (_binned(g, inp[k], D, t.n_bins, npix) for k in ("w", "wf"))
    Pb = np.pad(P[:nP], ((0, 0), (0, t.n_bins * D - npix))).reshape(nP, t.n_bins, D).mean(-1)
    wff = inp["wff"]
    partners = []  # of Tₐ: [w·Q₀ … w·f′]
    if nP:
        G, _ = _shift_free_terms(g, wb, wfb, Pb)
        Q = g.op("MatMul", _cholesky_inverse(g, G, nP, cfg.ridge), g.const(Pb))  # (B, nP, bins)
        wQ = g.mul(g.op("Unsqueeze", wb, g.i64(1)), Q)
        c = g.op("ReduceSum", g.mul(Q, g.op("Unsqueeze", wfb, g.i64(1))), g.i64(2), keepdims=0)
        fit = g.op("MatMul", g.op("Unsqueeze", c, g.i64(1)), wQ)  # (B, 1, bins)
        wfb = g.sub(wfb, g.op("Squeeze", fit, g.i64(1)))
        wff = g.sub(wff, g.op("ReduceSum", g.mul(c, c), g.i64(1), keepdims=1))
        partners.append(wQ)
    partners.append(g.op("Unsqueeze", wfb, g.i64(1)))
    sT = partners[0] if len(partners) == 1 else g.op("Concat", *partners, axis=1)
    CT = _toeplitz(g, t.coarse_T, t.n_bins, t.n_coarse)
    CTT = _toeplitz(g, t.coarse_TT, t.n_bins, t.n_coarse)
    T_corr = g.reshape(g.op("MatMul", sT, CT), -1, (nP + 1) * K, t.n_coarse)
    TT_corr = g.reshape(g.op("MatMul", wb, CTT), -1, len(pairs(K)), t.n_coarse)
    S, b = {}, []
    C = [[g.take(T_corr, i * K + a, 1) for a in range(K)] for i in range(nP)]
    for n, (a, c_) in enumerate(pairs(K)):
        s = g.take(TT_corr, n, 1)
        for i in range(nP):
            s = g.sub(s, g.mul(C[i][a], C[i][c_]))
        S[(c_, a)] = s
    b = [g.take(T_corr, nP * K + a, 1) for a in range(K)]
    return _chi2_ldl(g, S, b, wff, cfg.ridge)


def _candidates(g: _Graph, chi2: str, t: ClassTables) -> tuple[str, str, str]:
    """The best separated local minima of the coarse curve: (B, n_cand) int64 coarse indices k
    (shift s_min + D·k, k ≤ k_max) and (B, n_cand) bool, whether each is a real local minimum
    (the first always is); and (B,) the coarse Δχ² of the next one, unrefined, over the best
    (BIG where there is none)."""
    n, big = t.n_coarse, g.const(BIG)
    padded = g.op("Pad", chi2, g.i64(0, 1, 0, 1), big)
    left = g.op("Slice", padded, g.i64(0), g.i64(n), g.i64(1))
    right = g.op("Slice", padded, g.i64(2), g.i64(n + 2), g.i64(1))
    is_min = g.op("And", g.op("LessOrEqual", chi2, left), g.op("LessOrEqual", chi2, right))
    cur = g.op("Where", is_min, chi2, big)
    k = g.const(np.arange(n)[None], np.int64)
    excl = g.const(max(math.ceil(t.dv_px / t.D), 1), np.int64)
    idx, ok, best = [], [], []
    for c in range(t.n_cand + 1):
        best.append(g.op("ReduceMin", cur, g.i64(1), keepdims=1))
        if c == t.n_cand:
            break
        i = g.op("ArgMin", cur, axis=1, keepdims=1)
        idx.append(i)
        ok.append(g.op("Less", best[c], g.const([[BIG / 2]])))
        far = g.op("Greater", g.op("Abs", g.sub(k, i)), excl)
        cur = g.op("Where", far, cur, big)
    k_c = g.op("Min", g.op("Concat", *idx, axis=1) if t.n_cand > 1 else idx[0],
               g.const(t.k_max, np.int64))
    valid = g.op("Concat", *ok, axis=1) if t.n_cand > 1 else ok[0]
    d_next = g.op("Squeeze", g.sub(best[-1], best[0]), g.i64(1))
    return k_c, valid, d_next


def _block_index(g: _Graph, k_c: str, t: ClassTables) -> str:
    """(B, n_cand, n_rows/D) int32: which D-pixel block of a spectrum's (led) signal fills
    each block of rows at candidate k; −1 or n_blocks (both the zero block) outside it.

    Row r' = D·u + v holds pixel p = r' + D·k − (s_max − s_min); with ``lead`` zeros before
    the signal that is block u + k − (s_max − s_min) // D, offset v.
    """
    q = (t.s_max - t.s_min) // t.D
    k = g.op("Unsqueeze", g.op("Cast", k_c, to=TensorProto.INT32), g.i64(2))
    u = g.const(np.arange(t.n_rows // t.D)[None, None] - q, np.int32)
    return g.op("Clip", g.add(k, u), g.const(-1, np.int32), g.const(t.n_blocks, np.int32))


def _gather_rest_frame(g: _Graph, x: str, block: str, t: ClassTables, npix: int) -> str:
    """(B, n_cand, n_rows): a spectrum's signal x (B, npix) moved to its candidates' rest frame.

    So that one Toeplitz matrix of template values serves every spectrum and candidate.
    Candidates sit on the coarse grid, so whole D-pixel blocks are gathered (a memcpy each,
    not one index per pixel); every spectrum's row ends in a zero block, which index −1 of
    the next row also reaches.
    """
    D = t.D
    n_blk = t.n_blocks + 1
    padded = g.op("Pad", x, g.i64(0, t.lead, 0, n_blk * D - npix - t.lead))
    blocks = g.reshape(padded, -1, D)  # (B·n_blk, D)
    B = g.op("Cast", g.op("Gather", g.op("Shape", x), g.const(0, np.int64)), to=TensorProto.INT32)
    row0 = g.op("Range", g.const(0, np.int32), B, g.const(1, np.int32))
    base = g.reshape(g.mul(row0, g.const(n_blk, np.int32)), -1, 1, 1)  # (B, 1, 1)
    rows = g.op("Gather", blocks, g.add(block, base), axis=0)  # (B, c, n_rows/D, D)
    return g.reshape(rows, 0, 0, -1)


def _rest_legendre(n_rows: int, n: int) -> np.ndarray:
    """(n_rows, n) Legendre L_m(t) over the fine rows, t = 2r'/(n_rows − 1) − 1 ∈ [−1, 1]."""
    t = np.linspace(-1.0, 1.0, n_rows)
    return np.stack([np.polynomial.legendre.Legendre.basis(m)(t) for m in range(n)] or
                    [np.zeros(n_rows)], 1)[:, :n]


MAX_POLY = 6  # most Legendre terms _poly_cross_terms folds (the cancellation grows ~8x a degree)
# Legendre terms the fine stage folds (_poly_cross_terms); any beyond are gathered as w·Pᵢ.
# Quasars, max |χ²_graph − χ²_float64| / Σw·f² on the 10 simulated spectra of the tests:
# n_poly = 5 folded 6.6e-5 (over the tests' 5e-5), first 4 folded 2.9e-5, first 3 folded
# 1.1e-5 (= n_poly 3's); n_poly = 6: 3.5e-4 / 3.1e-5 / 1.4e-5. Gathering costs ~10 % of the
# served graph's throughput at n_poly = 5 (2 threads, batch 256: ~2,000 vs ~2,200 spectra/s;
# n_poly = 3: ~2,650). 3 keeps the graph of n_poly ≤ 3 as it was.
FOLD_POLY = 3


def poly_shift_coefficients(n: int, alpha: float) -> np.ndarray:
    """d (n, n, n) with Pᵢ(α·t + β) = Σ_m (Σ_e d[i, m, e]·βᵉ)·L_m(t), float64 (exact algebra).

    Pᵢ in powers of x (leg2poly), (αt + β)ᵏ expanded binomially, tʲ back to Legendre in t
    (poly2leg). d[i, m, e] ≠ 0 only for m ≤ i and e ≤ i − m; d[i, i, 0] = αⁱ.
    """
    leg = np.polynomial.legendre
    to_leg = [leg.poly2leg(np.eye(n)[j]) for j in range(n)]  # tʲ = Σ_m to_leg[j][m]·L_m
    d = np.zeros((n, n, n))
    for i in range(n):
        a = leg.leg2poly(np.eye(n)[i])  # Pᵢ(x) = Σ_k a[k]·xᵏ
        for k in range(i + 1):
            for j in range(k + 1):  # a[k]·C(k, j)·αʲ·tʲ·β^(k−j)
                d[i, :j + 1, k - j] += a[k] * math.comb(k, j) * alpha ** j * to_leg[j][:j + 1]
    return d


def _poly_cross_terms(g: _Graph, Y: list[str], shifts: str, t: ClassTables, npix: int) -> list[str]:
    """Σ w·Pᵢ(p)·Tₐ from Y_m = Σ w·L_m(t)·Tₐ over the rest-frame rows (Pᵢ: Legendre in pixel).

    A spectrum's pixel at row r' is p = r' + s_c − s_max, so its Legendre variable
    x = 2p/(npix − 1) − 1 = α·t + β with α = (n_rows − 1)/(npix − 1) and
    β = α − 1 + 2(s_c − s_max)/(npix − 1), and Pᵢ(αt + β) = Σ_{m≤i} c_{i,m}(β)·L_m(t), each
    c_{i,m} a polynomial of degree ≤ i − m in β whose coefficients depend on α only
    (poly_shift_coefficients, at build time): P₁ = αL₁ + β, P₂ = α²L₂ + 3αβL₁ +
    (α²/2 + 1.5β² − 0.5), … In the graph: β, β², … once per candidate, then
    termᵢ = Σ_m c_{i,m}(β)·Y_m (highest m first; for i ≤ 2 the same ops, in the same order, as
    the formulas above). Folding L_m into the constants saves gathering w·Pᵢ per spectrum.

    Precision: termᵢ is a sum of n_poly products whose sizes exceed the result's: the data fill
    only 1/α of the rows' t range, where a degree-i polynomial bounded on the data is large
    elsewhere, and the rounding of each Y_m (float32 SGEMM over n_rows, ~1e-6 of Σw·|Tₐ|) is
    multiplied by |c_{i,m}(β)|. max over the β range of Σ_m |c_{i,m}| — GALAXY (α = 1.79,
    |β| ≤ 0.79): 1, 2.6, 9.5, 39, 170, 761 for i = 0…5; QSO (α = 2.88, |β| ≤ 1.88): 1, 4.8,
    34, 263, 2168, 18382, largest where the candidate puts the data at an end of the row range
    (z near 0.03 or 5). The β polynomials themselves do not cancel (Σ_e |d·βᵉ| = |c| at those
    ends), so Horner or float64 there would change nothing: the error is in Y_m (a float64
    MatMul would double the stage's cost). Measured on χ² (FOLD_POLY): folding P₃ is harmless,
    P₄ exceeds the tests' tolerance, so _fine_chi2 folds the first FOLD_POLY terms only;
    tests/training/spectra/test_redshift_graph_poly.py holds the folding to its error bound.
    """
    n = len(Y)
    if n > MAX_POLY:
        raise ValueError(f"rest-frame polynomial terms are folded for ≤ {MAX_POLY} Legendre "
                         f"terms (float32 cancellation grows ~8x per degree), got {n}")
    alpha = (t.n_rows - 1) / (npix - 1)
    d = poly_shift_coefficients(n, alpha)
    ds = g.op("Cast", g.sub(shifts, g.const(t.s_max, np.int64)), to=TensorProto.FLOAT)
    beta = g.add(g.mul(ds, g.const(2.0 / (npix - 1))), g.const(alpha - 1.0))
    beta = g.op("Unsqueeze", beta, g.i64(2))  # (B, c, 1)
    powers = [None, beta]  # βᵉ, e ≥ 1
    for _ in range(2, n):
        powers.append(g.mul(powers[-1], beta))

    def coefficient(i: int, m: int) -> str:
        """c_{i,m}(β): (B, c, 1), or a scalar constant where it has no β term."""
        acc = None
        for e in range(i - m, 0, -1):  # highest power first
            if d[i, m, e] != 0:
                term = powers[e] if d[i, m, e] == 1 else g.mul(powers[e], g.const(d[i, m, e]))
                acc = term if acc is None else g.add(acc, term)
        if acc is None:
            return g.const(d[i, m, 0])
        return g.add(acc, g.const(d[i, m, 0])) if d[i, m, 0] != 0 else acc

    out = Y[:1]  # P₀ = 1 = L₀
    for i in range(1, n):
        acc = None
        for m in range(i, -1, -1):
            if np.any(d[i, m]):
                term = g.mul(Y[m], coefficient(i, m))
                acc = term if acc is None else g.add(acc, term)
        out.append(acc)
    return out


def _fine_chi2(g: _Graph, t: ClassTables, k_c: str, shifts: str, inp: dict, P: np.ndarray,
               App: str | None, bP: str | None, cfg: RedshiftGraphConfig, npix: int) -> str:
    """(B, n_cand, 2W+1) exact χ² at shifts s_c − W … s_c + W (BIG outside s_min … s_max).

    w and w·f are gathered: w pairs with Tₐ·T_b, with Tₐ·L_m(t) (the first FOLD_POLY
    polynomial terms, see _poly_cross_terms), w·f with Tₐ — one MatMul each. Terms beyond
    FOLD_POLY are gathered as w·Pᵢ and correlated with Tₐ alongside w·f (exact, no folding).
    """
    W, nc, nP, K = t.W, t.n_cand, t.n_poly, t.K
    nF = min(nP, FOLD_POLY)
    nL = 2 * W + 1
    block = _block_index(g, k_c, t)
    rows_w = _gather_rest_frame(g, inp["w"], block, t, npix)  # (B, c, n_rows)
    rows_wf = _gather_rest_frame(g, inp["wf"], block, t, npix)
    if nP > nF:
        rows = [rows_wf] + [_gather_rest_frame(g, g.mul(inp["w"], g.const(P[i][None])), block,
                                               t, npix) for i in range(nF, nP)]
        rows_wf = g.op("Concat", *[g.op("Unsqueeze", r, g.i64(2)) for r in rows], axis=2)
    CT = _toeplitz(g, t.fine_T, t.n_rows, nL)
    C_w = [_toeplitz(g, t.fine_TT, t.n_rows, nL)]
    L = _rest_legendre(t.n_rows, nF)
    C_w += [g.mul(CT, g.const(L[:, m:m + 1])) for m in range(nF)]
    C_w = C_w[0] if len(C_w) == 1 else g.op("Concat", *C_w, axis=1)
    n_pp = len(pairs(K))
    by_w = g.reshape(g.op("MatMul", rows_w, C_w), -1, nc, n_pp + nF * K, nL)
    b_T = g.reshape(g.op("MatMul", rows_wf, CT), -1, nc, (1 + nP - nF) * K, nL)
    A, b = {}, []
    for n, (a, c) in enumerate(pairs(K)):
        A[(c, a)] = g.take(by_w, n, 2)
    for a in range(K):
        Y = [g.take(by_w, n_pp + m * K + a, 2) for m in range(nF)]
        for i, term in enumerate(_poly_cross_terms(g, Y, shifts, t, npix) if nF else []):
            A[(K + i, a)] = term
        for i in range(nF, nP):
            A[(K + i, a)] = g.take(b_T, (1 + i - nF) * K + a, 2)
        b.append(g.take(b_T, a, 2))
    _add_poly_block(g, A, b, App, bP, K, nP, 2)
    wff = g.op("Unsqueeze", inp["wff"], g.i64(2))
    chi2 = _chi2_ldl(g, A, b, wff, cfg.ridge)
    s = g.add(g.op("Unsqueeze", shifts, g.i64(2)), g.const(np.arange(-W, W + 1), np.int64))
    inside = g.op("And", g.op("GreaterOrEqual", s, g.const(t.s_min, np.int64)),
                  g.op("LessOrEqual", s, g.const(t.s_max, np.int64)))
    return g.op("Where", inside, chi2, g.const(BIG))


def _refine(g: _Graph, chi2: str, t: ClassTables) -> dict[str, str]:
    """Per candidate: grid argmin, its χ², parabolic offset and curvature (as baseline._parabola).

    All (B, n_cand). ``interior``: the minimum is not on the window's edge (a real minimum,
    not a slope running into the next candidate's basin).
    """
    W = t.W
    i = g.op("ArgMin", chi2, axis=2, keepdims=1)  # (B, c, 1)
    j = g.op("Clip", i, g.const(1, np.int64), g.const(2 * W - 1, np.int64))
    at = lambda k: g.op("GatherElements", chi2, k, axis=2)
    one = g.const(1, np.int64)
    a, m, c = at(g.sub(j, one)), at(j), at(g.add(j, one))
    den = g.add(g.sub(a, g.mul(g.const(2.0), m)), c)
    usable = g.op("And", g.op("Greater", den, g.const(0.0)),
                  g.op("Less", g.op("Max", a, c), g.const(BIG / 2)))
    off = g.div(g.mul(g.const(0.5), g.sub(a, c)), g.op("Where", usable, den, g.const(1.0)))
    off = g.op("Clip", g.op("Where", usable, off, g.const(0.0)), g.const(-1.0), g.const(1.0))
    lag = g.add(g.op("Cast", g.sub(j, g.const(W, np.int64)), to=TensorProto.FLOAT), off)
    sq = lambda x: g.op("Squeeze", x, g.i64(2))
    interior = g.op("And", g.op("Greater", i, g.const(0, np.int64)),
                    g.op("Less", i, g.const(2 * W, np.int64)))
    return {"lag": sq(lag), "chi2": sq(at(i)), "curv": sq(g.op("Where", usable, den, g.const(0.0))),
            "interior": sq(interior)}


def _pick(g: _Graph, x: str, best: str) -> str:
    """x[b, best[b]] for (B, n_cand) x and (B, 1) best → (B,)."""
    return g.op("Squeeze", g.op("GatherElements", x, best, axis=1), g.i64(1))


def _class_outputs(g: _Graph, t: ClassTables, shifts: str, valid: str, d_next: str,
                   fine: dict[str, str], n_good: str, grid: LogLambdaGrid,
                   cfg: RedshiftGraphConfig) -> dict[str, str]:
    """z, σ_z, χ²_min, dof and the warning bits of the best candidate.

    σ_z: χ² ≈ χ²_min + ½·χ''·(z − ẑ)² ⇒ σ² = 2/χ''; with s = log10(1+z)/Δ, dz = ln10·(1+z)·Δ·ds.
    """
    s = g.add(g.op("Cast", shifts, to=TensorProto.FLOAT), fine["lag"])  # (B, c) pixels
    best = g.op("ArgMin", fine["chi2"], axis=1, keepdims=1)  # (B, 1)
    s_best = _pick(g, s, best)
    chi2_min = _pick(g, fine["chi2"], best)
    z = g.sub(g.op("Exp", g.mul(s_best, g.const(LN10 * grid.dloglam))), g.const(1.0))
    curv = g.op("Max", _pick(g, fine["curv"], best), g.const(1e-12))
    sigma_s = g.op("Sqrt", g.div(g.const(2.0), curv))
    z_sigma = g.mul(g.mul(sigma_s, g.add(z, g.const(1.0))), g.const(LN10 * grid.dloglam))
    dof = g.op("Max", g.sub(g.op("Squeeze", n_good, g.i64(1)), g.const(float(t.K + t.n_poly))),
               g.const(1.0))
    # bit 0: another real minimum, far enough away, nearly as good — among the refined
    # candidates (full-resolution χ²) or the next coarse minimum (coarse χ², both binned alike)
    d_chi2 = g.sub(fine["chi2"], g.op("Unsqueeze", chi2_min, g.i64(1)))
    far = g.op("GreaterOrEqual", g.op("Abs", g.sub(s, g.op("Unsqueeze", s_best, g.i64(1)))),
               g.const(t.dv_px))
    rival = g.op("And", g.op("And", valid, fine["interior"]),
                 g.op("And", far, g.op("Less", d_chi2, g.const(cfg.delta_chi2_warn))))
    rival = g.op("ReduceMax", g.op("Cast", rival, to=TensorProto.INT32), g.i64(1), keepdims=0)
    next_close = g.op("Cast", g.op("Less", d_next, g.const(cfg.delta_chi2_warn)),
                      to=TensorProto.INT32)
    ambiguous = g.op("Max", rival, next_close)
    poor = g.op("Cast", g.op("Greater", g.div(chi2_min, dof), g.const(cfg.rchi2_warn)),
                to=TensorProto.INT32)
    warn = g.add(g.mul(ambiguous, g.const(WARN_AMBIGUOUS, np.int32)),
                 g.mul(poor, g.const(WARN_POOR_FIT, np.int32)))
    return {"z": z, "z_sigma": z_sigma, "chi2": chi2_min, "dof": dof, "z_warning": warn}


def _class_search(g: _Graph, t: ClassTables, inp: dict, P: np.ndarray, grid: LogLambdaGrid,
                  cfg: RedshiftGraphConfig) -> dict[str, str]:
    """One class: signals → coarse χ² → candidates → fine χ² → z, σ_z, χ², dof, warning."""
    App, bP = _shift_free_terms(g, inp["w"], inp["wf"], P[:t.n_poly]) if t.n_poly else (None, None)
    coarse = _coarse_chi2(g, t, inp, P, cfg, grid.npix)
    k_c, valid, d_next = _candidates(g, coarse, t)
    shifts = g.add(g.mul(k_c, g.const(t.D, np.int64)), g.const(t.s_min, np.int64))
    chi2 = _fine_chi2(g, t, k_c, shifts, inp, P, App, bP, cfg, grid.npix)
    out = _class_outputs(g, t, shifts, valid, d_next, _refine(g, chi2, t), inp["n_good"], grid, cfg)
    if cfg.curves:
        out.update(chi2_curve=chi2, shifts=shifts, chi2_coarse=coarse)
    return out


# ------------------------------------------------------------------------------- public API
OUTPUT_KEYS = ("z", "z_sigma", "chi2", "dof", "z_warning")
CURVE_KEYS = ("chi2_curve", "shifts", "chi2_coarse")
CLASSES = ("GALAXY", "QSO")


def output_name(key: str, cls: str) -> str:
    return f"{key}_{cls.lower()}"


def build_nodes(g: _Graph, spectrum: str, cfg: RedshiftGraphConfig,
                grid: LogLambdaGrid = DEFAULT_GRID) -> dict[str, dict[str, str]]:
    """Add the redshift search for GALAXY and QSO to ``g``; {class: {key: tensor name}}."""
    sets = redshift_sets(grid)
    sets["QSO"].n_poly = cfg.qso_n_poly
    P = legendre(grid.npix, max(rs.n_poly for rs in sets.values()))  # rows ≥ every class's
    inp = _inputs(g, spectrum, band_mask(cfg.mask_bands, grid) if cfg.mask_bands else None,
                  cfg.spike_sigma, grid.npix)
    fits = {cls: _class_search(g, class_tables(cls, sets[cls], grid, cfg), inp, P, grid, cfg)
            for cls in CLASSES}
    for f in fits.values():
        f["wff"] = inp["wff"]  # (B, 1): χ² of the null model, for the no-signal test
    return fits


def _output_info(name: str, key: str, cfg: RedshiftGraphConfig) -> onnx.ValueInfoProto:
    dtype = {"z_warning": TensorProto.INT32, "shifts": TensorProto.INT64}.get(key,
                                                                              TensorProto.FLOAT)
    rank = {"chi2_curve": 3, "shifts": 2, "chi2_coarse": 2}.get(key, 1)
    return helper.make_tensor_value_info(name, dtype, ["batch"] + [None] * (rank - 1))


def build_redshift_model(cfg: RedshiftGraphConfig = RedshiftGraphConfig(),
                         grid: LogLambdaGrid = DEFAULT_GRID) -> onnx.ModelProto:
    """The redshift search alone: ``spectrum`` (B, 2, npix) → per class z, σ_z, χ², dof, warning."""
    g = _Graph("rz_")
    outs = build_nodes(g, "spectrum", cfg, grid)
    keys = OUTPUT_KEYS + (CURVE_KEYS if cfg.curves else ())
    outputs = []
    for cls, o in outs.items():
        for key in keys:
            name = output_name(key, cls)
            g.op("Identity", o[key], out=name)
            outputs.append(_output_info(name, key, cfg))
    inp = helper.make_tensor_value_info("spectrum", TensorProto.FLOAT, ["batch", 2, grid.npix])
    graph = helper.make_graph(g.nodes, "redshift_chi2", [inp], outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="specula.training.redshift_graph")
    _describe(model, cfg)
    onnx.checker.check_model(model)
    return model


def _describe(model: onnx.ModelProto, cfg: RedshiftGraphConfig) -> None:
    """Record the search configuration in the graph, so a candidate says how it was built."""
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                   "redshift_graph": json.dumps(dataclasses.asdict(cfg))})


# ------------------------------------------------------------------------------------ fusion
NET_RENAMES = {"z": "z_network", "z_sigma": "z_sigma_network"}


def _rename_tensors(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    """Rename tensors (node outputs/inputs and graph outputs) in place."""
    for node in graph.node:
        node.output[:] = [renames.get(n, n) for n in node.output]
        node.input[:] = [renames.get(n, n) for n in node.input]
    for out in graph.output:
        out.name = renames.get(out.name, out.name)


def _top_class(g: _Graph, probs: str, top_of_label: np.ndarray) -> str:
    """(B,) int64 top class: argmax of the summed label probabilities (the contract's rule)."""
    onehot = np.eye(len(TOP_CLASSES), dtype=np.float32)[top_of_label]  # (labels, tops)
    return g.op("ArgMax", g.op("MatMul", probs, g.const(onehot)), axis=1, keepdims=0)


def _by_class(g: _Graph, top: str, galaxy: str, qso: str, star: str) -> str:
    """galaxy / qso / star value per spectrum according to its top class."""
    is_gal = g.op("Equal", top, g.const(TOP_CLASSES.index("GALAXY"), np.int64))
    is_qso = g.op("Equal", top, g.const(TOP_CLASSES.index("QSO"), np.int64))
    return g.op("Where", is_gal, galaxy, g.op("Where", is_qso, qso, star))


def _no_signal(g: _Graph, fits: dict[str, dict[str, str]], cfg: RedshiftGraphConfig) -> str:
    """(B,) int32: WARN_NO_SIGNAL where Σw·f² − min(χ²_galaxy, χ²_qso) < cfg.no_signal_dchi2
    (a sky fibre, an empty or pure-noise spectrum: any class the network gives it is a guess)."""
    null = g.op("Squeeze", fits["GALAXY"]["wff"], g.i64(1))
    best = g.op("Min", fits["GALAXY"]["chi2"], fits["QSO"]["chi2"])
    weak = g.op("Less", g.sub(null, best), g.const(cfg.no_signal_dchi2))
    return g.op("Where", weak, g.const(WARN_NO_SIGNAL, np.int32), g.const(0, np.int32))


def _calibrated_sigma(g: _Graph, sigma: str, rchi2: str, scale: float) -> str:
    """σ_curvature · √max(χ²/dof, 1) · scale (see RedshiftGraphConfig.z_sigma_scale)."""
    inflate = g.op("Sqrt", g.op("Max", rchi2, g.const(1.0)))
    return g.mul(g.mul(sigma, inflate), g.const(scale))


def fit_sigma_scale(z: np.ndarray, z_sigma: np.ndarray, z_true: np.ndarray,
                    coverage: float = 0.6827) -> float:
    """The factor that makes ``coverage`` of |z − z_true| ≤ factor·z_sigma (on validation
    spectra of the right class; outliers included, so the interval is honest about them)."""
    ratio = np.abs(z - z_true) / np.maximum(z_sigma, 1e-12)
    return float(np.quantile(ratio, coverage))


def fuse_with_classifier(classifier: onnx.ModelProto,
                         cfg: RedshiftGraphConfig = RedshiftGraphConfig(),
                         grid: LogLambdaGrid = DEFAULT_GRID) -> onnx.ModelProto:
    """One graph: the classifier's outputs, with ``z``/``z_sigma`` from the χ² fit of its top class.

    GALAXY/QSO: the fit of that class. STAR: z = 0 with σ = ``star_z_sigma`` and warning bit 4
    (no fit) — stars move at ~10² km/s (z ~ 3e-4; 1e-3 covers halo stars), while the network's
    star redshift is off by σ_NMAD 0.019 (report), so the prior beats it; a stellar χ² fit (124 templates ×
    ±1200 km/s) would cost more than the rest of the graph. The network's own values stay
    available as ``z_network``/``z_sigma_network``. Added outputs: ``z_warning`` (int32
    bitmask), ``z_galaxy``, ``z_qso``, ``z_chi2_galaxy``, ``z_chi2_qso`` (χ²_min of each class;
    their difference is a classical class check), ``z_rchi2`` (χ²/dof of the chosen fit; −1
    for STAR: no fit, and NaN would not survive JSON).
    """
    model = onnx.ModelProto()
    model.CopyFrom(classifier)
    graph = model.graph
    _rename_tensors(graph, NET_RENAMES)
    g = _Graph("rz_")
    fits = build_nodes(g, graph.input[0].name, cfg, grid)
    gal, qso = fits["GALAXY"], fits["QSO"]
    top = _top_class(g, "probs", TOP_OF_LABEL)
    zero = g.const(0.0)
    star_warn = g.const(WARN_NO_FIT, np.int32)
    rchi2 = {c: g.div(f["chi2"], f["dof"]) for c, f in fits.items()}
    sigma = {c: _calibrated_sigma(g, f["z_sigma"], rchi2[c], cfg.z_sigma_scale[c])
             for c, f in fits.items()}
    outputs = {
        "z": (_by_class(g, top, gal["z"], qso["z"], zero), TensorProto.FLOAT),
        "z_sigma": (_by_class(g, top, sigma["GALAXY"], sigma["QSO"],
                              g.const(cfg.star_z_sigma)), TensorProto.FLOAT),
        "z_warning": (g.op("BitwiseOr", _by_class(g, top, gal["z_warning"], qso["z_warning"],
                                                  star_warn), _no_signal(g, fits, cfg)),
                      TensorProto.INT32),
        "z_galaxy": (gal["z"], TensorProto.FLOAT),
        "z_qso": (qso["z"], TensorProto.FLOAT),
        "z_chi2_galaxy": (gal["chi2"], TensorProto.FLOAT),
        "z_chi2_qso": (qso["chi2"], TensorProto.FLOAT),
        "z_rchi2": (_by_class(g, top, rchi2["GALAXY"], rchi2["QSO"], g.const(-1.0)),
                    TensorProto.FLOAT),
    }
    for name, (tensor, dtype) in outputs.items():
        g.op("Identity", tensor, out=name)
    graph.node.extend(g.nodes)
    graph.initializer.extend(g.inits)
    _describe(model, cfg)
    graph.output.extend(helper.make_tensor_value_info(n, d, ["batch"])
                        for n, (_, d) in outputs.items())
    onnx.checker.check_model(model)
    return model


def write_fused(classifier_path: str | Path, out_path: str | Path,
                cfg: RedshiftGraphConfig = RedshiftGraphConfig()) -> Path:
    """Fuse the classifier at ``classifier_path`` and write the candidate graph to ``out_path``
    (never into models/: the lead decides what ships)."""
    out = Path(out_path)
    onnx.save(fuse_with_classifier(onnx.load(str(classifier_path)), cfg), str(out))
    return out
