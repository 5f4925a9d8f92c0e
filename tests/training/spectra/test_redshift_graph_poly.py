"""Legendre terms in the fine stage: the folded cross terms Σ w·Pᵢ(αt + β)·Tₐ (any n_poly).

redshift_graph._poly_cross_terms gets Y_m = Σ w·L_m(t)·Tₐ over rest-frame rows and returns
Σ_m c_{i,m}(β)·Y_m. The algebra is exact (float64 identity below); in float32 each Y_m carries
its own rounding (≲ ε·|Y_m| for inputs already rounded, plus a few ε per product and sum), and
those errors are multiplied by |c_{i,m}(β)|, which grows with degree. So the bound held here is
per element: |graph − exact| ≤ Σ_m |Y_m|·((i + 3)·ε·Σ_e |d_{i,m,e}·βᵉ| + |∂c_{i,m}/∂β|·δβ)
(ε = 2⁻²⁴: one rounding in each input, ≤ i + 2 in the products and sums; δβ ≤ 3ε·(|α − 1| +
|β − α + 1|), β's own float32 rounding) — the cancellation the module docstring quantifies,
not a fudge factor.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from training.spectra.redshift_graph import (
    OPSET,
    _Graph,
    _poly_cross_terms,
    _rest_legendre,
    poly_shift_coefficients,
)

EPS32 = 2.0 ** -24
LEG = np.polynomial.legendre


def c_of(d: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """c[..., i, m] = Σ_e d[i, m, e]·βᵉ."""
    return np.einsum("ime,...e->...im", d, beta[..., None] ** np.arange(d.shape[2]))


@pytest.mark.parametrize("alpha", [1.0, 1.7921472392638036, 2.881717791411043, 0.6])
def test_shift_coefficients_expand_the_shifted_legendre_polynomials(alpha):
    n = 6
    d = poly_shift_coefficients(n, alpha)
    rng = np.random.default_rng(1)
    t, beta = rng.uniform(-1, 1, 50), rng.uniform(-2, 2, 50)
    c = c_of(d, beta)  # (50, n, n)
    Lt = np.stack([LEG.legval(t, np.eye(n)[m]) for m in range(n)], 1)  # (50, n)
    for i in range(n):
        direct = LEG.legval(alpha * t + beta, np.eye(n)[i])
        np.testing.assert_allclose((c[:, i] * Lt).sum(1), direct, rtol=1e-10, atol=1e-10)
        assert np.all(d[i, i + 1:] == 0) and all(np.all(d[i, m, i - m + 1:] == 0) for m in range(i))


@pytest.mark.parametrize("alpha", [1.7921472392638036, 2.881717791411043])
def test_low_degrees_keep_the_hand_written_constants(alpha):
    """i ≤ 2: the same float32 constants as P₁ = αL₁ + β, P₂ = α²L₂ + 3αβL₁ + α²/2 + 1.5β² − 0.5
    (the graph before n_poly > 3 was supported), for the served classes' α."""
    d = poly_shift_coefficients(3, alpha).astype(np.float32)
    f = np.float32
    expect = {(1, 1, 0): alpha, (1, 0, 1): 1.0, (2, 2, 0): alpha ** 2, (2, 1, 1): 3 * alpha,
              (2, 0, 0): alpha ** 2 / 2 - 0.5, (2, 0, 2): 1.5}
    for (i, m, e), v in expect.items():
        assert d[i, m, e] == f(v), (i, m, e)
    zero = np.ones_like(d, bool)
    zero[0, 0, 0] = False
    for k in expect:
        zero[k] = False
    assert np.all(d[zero] == 0)


def cross_term_session(n: int, n_rows: int, npix: int, s_max: int) -> ort.InferenceSession:
    g = _Graph("t_")
    t = SimpleNamespace(n_rows=n_rows, s_max=s_max, n_poly=n)
    Y = [f"Y{m}" for m in range(n)]
    out = _poly_cross_terms(g, Y, "shifts", t, npix)
    for i, o in enumerate(out):
        g.op("Identity", o, out=f"P{i}")
    ins = [helper.make_tensor_value_info(y, TensorProto.FLOAT, [None, None, None]) for y in Y]
    ins.append(helper.make_tensor_value_info("shifts", TensorProto.INT64, [None, None]))
    outs = [helper.make_tensor_value_info(f"P{i}", TensorProto.FLOAT, None) for i in range(n)]
    model = helper.make_model(helper.make_graph(g.nodes, "cross", ins, outs, g.inits),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("n_rows, npix", [(40, 16), (61, 21)])
def test_folded_cross_terms_equal_direct_evaluation(n_rows, npix):
    """Random w, Tₐ on a small geometry (α = 2.6 and 3.0: as stretched as the quasar rows),
    candidates across the whole shift range (β at both ends): the graph's Σ_m c_{i,m}(β)·Y_m
    in float32 against Σ_r w·Pᵢ(x_r)·Tₐ in float64, n_poly = 5."""
    n, B, C, nL = 5, 3, 2, 7
    rng = np.random.default_rng(7)
    s_max = 100
    lag = rng.integers(0, n_rows - npix + 1, (B, C))  # s_max − s_c: data rows lag … lag + npix − 1
    lag[0] = [0, n_rows - npix]  # both ends of the row range, where |c| is largest
    shifts = s_max - lag
    r = np.arange(n_rows)
    p = r[None, None] - lag[..., None]  # observed pixel of each row
    w = np.where((p >= 0) & (p < npix), rng.uniform(0.1, 2.0, (B, C, n_rows)), 0.0)
    T = rng.normal(0, 1, (n_rows, nL))
    Y = np.einsum("bcr,rm,rj->mbcj", w, _rest_legendre(n_rows, n), T)  # float64
    x = np.clip(2 * p / (npix - 1) - 1, -1, 1)  # rows with w = 0: any value
    exact = np.stack([np.einsum("bcr,bcr,rj->bcj", w, LEG.legval(x, np.eye(n)[i]), T)
                      for i in range(n)])
    Y32 = Y.astype(np.float32)
    got = cross_term_session(n, n_rows, npix, s_max).run(
        None, {**{f"Y{m}": Y32[m] for m in range(n)}, "shifts": shifts.astype(np.int64)})
    alpha = (n_rows - 1) / (npix - 1)
    beta = alpha - 1 - 2 * lag / (npix - 1)
    d = np.abs(poly_shift_coefficients(n, alpha))
    e = np.arange(n)
    b = np.abs(beta)[..., None]
    size = np.einsum("ime,bce->bcim", d, b ** e)  # Σ_e |d·βᵉ| ≥ |c_{i,m}(β)|
    slope = np.einsum("ime,bce->bcim", d * e, b ** np.maximum(e - 1, 0))  # |∂c/∂β| bound
    d_beta = 3 * EPS32 * (abs(alpha - 1) + np.abs(beta - alpha + 1))  # β's own float32 rounding
    for i in range(n):
        per_m = (i + 3) * EPS32 * size[:, :, i] + slope[:, :, i] * d_beta[..., None]
        bound = np.einsum("bcm,mbcj->bcj", per_m, np.abs(Y))
        err = np.abs(got[i] - exact[i])
        assert np.all(err <= bound), (i, (err / bound).max())
    # folding is what costs precision: at the ends the terms dwarf the result (Σ|c| > 100)
    assert size[0, 1, 4].sum() > 100
