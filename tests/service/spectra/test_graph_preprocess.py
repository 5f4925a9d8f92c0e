"""The preprocessing graph gives preprocess.py's model input (issue 19, first step).

The tolerance, |Δ| ≤ 1e-6, and why it holds on any x86-64 CPU:

- The graph computes in float64 from float32 rows, as preprocess.py computes in float64 from
  the same float32 values (every reader's flux and ivar are float32 on disk; the simulated
  spectra here are rounded to float32 before both sides see them). Each elementwise op is
  IEEE-754, correctly rounded per element, whatever the CPU. The graph has no MatMul/Gemm,
  whose kernels ORT picks by CPU feature (FMA). So the only freedom a CPU or thread count has
  is the order of a float64 sum, which moves a value by ~1e-16 relative, and the argument
  below absorbs that.
- The two differ only in the order of float64 sums: the banded Σ q·overlap against
  preprocess.py's differences of cumulative sums (its general path; its aligned path for
  SDSS/BOSS grids has the graph's exact expressions, and the real SDSS file agrees bit for
  bit). That moves a normalised value by ≲ n·2⁻⁵³·max|x| ≈ 1e-12, far below a float32 step.
- So after the one rounding to float32 both give the same float32 or adjacent ones. Adjacent
  float32 are ≤ 2⁻²⁰ ≈ 9.5e-7 apart below |x| = 16, hence 1e-6. Channel 0 is clipped at ±50,
  where a float32 step is 2⁻¹⁹ or 2⁻¹⁸: above |x| = 16 the bound is one float32 step, which is
  what :func:`assert_parity` allows there (and reports: it has not happened on these inputs).
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # the graph is built with onnx (the `train` extra)
ort = pytest.importorskip("onnxruntime")

from service.spectra import DEFAULT_GRID, Source, SpectrumError, make_spectrum, preprocess
from service.spectra.graph_preprocess import (
    OperatorCache,
    build_operator,
    preprocess_graph,
    run_graph,
)
from service.spectra.preprocess import (
    LogLambdaGrid,
    normalise,
    preprocess_many,
    resample_rows,
)
from service.spectra.registry import read_spectra
from service.spectra.spectrum import make_spectra
from tests.support.spectrum_writers import sdss_like_spectrum
from training.spectra.config import SimConfig
from training.spectra.instrument import SURVEY_NAMES
from training.spectra.simulate import simulate_one

TOL = 1e-6


@pytest.fixture(scope="module")
def session():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(preprocess_graph(DEFAULT_GRID).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def f32(s):
    """The spectrum with float32 flux and ivar, what a reader decodes and the graph takes."""
    return make_spectrum(s.wavelength, s.flux.astype(np.float32), s.ivar.astype(np.float32),
                         s.mask, dict(s.meta))


def graph_rows(s):
    """The raw rows the graph takes: the reader's mask folded into ivar = 0."""
    return s.flux, np.where(s.mask, 0.0, s.ivar)


def assert_parity(got, want):
    """|Δ| ≤ 1e-6, or one float32 step where that is larger (|x| ≥ 16; module docstring)."""
    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = np.maximum(TOL, np.spacing(np.abs(want)).astype(np.float64))
    assert (d <= bound).all(), f"max |Δ| {d.max():.3g} at {np.unravel_index(d.argmax(), d.shape)}"
    return float(d.max())


def check(session, s, grid=DEFAULT_GRID):
    x, n_good = run_graph(session, *graph_rows(s), build_operator(s.wavelength, grid))
    p = preprocess(s, grid)
    assert assert_parity(x[0], p.x) <= TOL
    assert int(n_good[0]) == int(np.count_nonzero(resample_rows(
        s.wavelength, s.flux, s.ivar, s.mask, grid).mask == 0))
    return x[0], p


def test_real_sdss_file_bit_for_bit(session, sdss_spec_path):
    _, (s,) = read_spectra(Source.from_path(sdss_spec_path))
    assert np.array_equal(s.flux.astype(np.float32), s.flux)  # float32 on disk: no rounding
    op = build_operator(s.wavelength, DEFAULT_GRID)
    assert op.band == 2  # aligned log-λ grid: each output pixel straddles one input edge
    x, _ = run_graph(session, *graph_rows(s), op)
    p = preprocess(s, DEFAULT_GRID)
    np.testing.assert_array_equal(x[0], p.x)
    assert op.coverage == p.coverage


@pytest.mark.parametrize("survey", SURVEY_NAMES)
def test_simulated_surveys(session, survey):
    cfg = SimConfig()
    for i in range(6):
        s, _ = simulate_one(7, 2, i, cfg, survey_name=survey)
        check(session, f32(s))


@pytest.mark.parametrize("seed", range(4))
def test_masked_runs_and_non_finite_pixels(session, seed):
    rng = np.random.default_rng(seed)
    s = sdss_like_spectrum(seed=seed, masked=None)
    mask = np.zeros(s.npix, bool)
    for start in rng.integers(0, s.npix - 200, 8):
        mask[start:start + rng.integers(1, 200)] = True
    mask |= rng.random(s.npix) < 0.05
    s = make_spectrum(s.wavelength, s.flux, s.ivar, mask)
    check(session, s)
    # raw rows with NaN / inf flux and ivar: the graph masks them as make_spectrum does
    flux, ivar = s.flux.astype(np.float32), s.ivar.astype(np.float32)
    flux[rng.integers(0, s.npix, 20)] = np.nan
    ivar[rng.integers(0, s.npix, 20)] = np.inf
    flux[rng.integers(0, s.npix, 20)] = -np.inf
    ivar[rng.integers(0, s.npix, 20)] = -1.0
    x, _ = run_graph(session, flux, ivar, build_operator(s.wavelength, DEFAULT_GRID))
    assert_parity(x[0], preprocess(make_spectrum(s.wavelength, flux, ivar), DEFAULT_GRID).x)


@pytest.mark.parametrize("lam", [(2000.0, 5200.0), (6000.0, 12000.0), (4000.0, 8000.0),
                                 (3000.0, 10000.0)])
@pytest.mark.parametrize("dlam", [0.8, 2.5, 0.3])
def test_partial_coverage_and_other_samplings(session, lam, dlam):
    wave = np.arange(*lam, dlam)
    rng = np.random.default_rng(int(dlam * 10))
    flux = (5 + np.sin(wave / 200) + rng.normal(0, 0.3, wave.size)).astype(np.float32)
    ivar = rng.uniform(1, 20, wave.size).astype(np.float32)
    x, _ = check(session, make_spectrum(wave, flux, ivar))
    assert not x[:, 0].any() or not x[:, -1].any() or lam == (3000.0, 10000.0)


def test_refused_spectra_still_match_the_arithmetic(session):
    """Coverage below MIN_COVERAGE: preprocess refuses, the arithmetic must still agree."""
    wave = np.arange(8900.0, 9500.0, 1.0)
    flux = np.linspace(1, 2, wave.size).astype(np.float32)
    s = make_spectrum(wave, flux, np.ones(wave.size, np.float32))
    with pytest.raises(SpectrumError):
        preprocess(s, DEFAULT_GRID)
    x, _ = run_graph(session, *graph_rows(s), build_operator(wave, DEFAULT_GRID))
    r = resample_rows(s.wavelength, s.flux, s.ivar, s.mask, DEFAULT_GRID)
    assert_parity(x[0], normalise(r))


def test_median_fallbacks_and_empty_rows(session):
    """Median 0 (most good flux exactly 0) → mean |flux|; all zero → 1.0; no good pixel → 0."""
    s = sdss_like_spectrum(masked=None)
    mostly_zero = s.flux.copy()
    mostly_zero[: int(0.7 * s.npix)] = 0.0
    rows = [mostly_zero, np.zeros(s.npix), s.flux]
    ivar = np.stack([s.ivar, s.ivar, np.zeros(s.npix)])
    x, n_good = run_graph(session, np.stack(rows), ivar, build_operator(s.wavelength,
                                                                        DEFAULT_GRID))
    for i in range(2):
        r = resample_rows(s.wavelength, rows[i], s.ivar, np.zeros(s.npix, bool), DEFAULT_GRID)
        assert_parity(x[i], normalise(r))
    assert not x[2].any() and n_good[2] == 0


def test_an_exposure_is_one_call(session, sdss_spec_path):
    """Many fibres on one grid, varied masks, dead and NaN fibres: one graph call equals
    preprocess_many fibre by fibre."""
    _, (base,) = read_spectra(Source.from_path(sdss_spec_path))
    rng = np.random.default_rng(3)
    n = 500
    sigma = np.where(base.ivar > 0, 1 / np.sqrt(np.maximum(base.ivar, 1e-12)), 0)
    flux = (base.flux + rng.normal(size=(n, base.npix)) * sigma * rng.uniform(0.5, 3, (n, 1))
            ).astype(np.float32)
    ivar = np.broadcast_to(base.ivar, (n, base.npix)).astype(np.float32)
    mask = rng.random((n, base.npix)) < rng.uniform(0, 0.3, (n, 1))
    mask[7] = True  # a dead fibre
    flux[11, 100:300] = np.nan
    spectra = make_spectra(base.wavelength, flux, ivar, mask,
                           [{"object_id": str(i)} for i in range(n)])
    x, n_good = run_graph(session, flux, np.where(mask, 0, ivar),
                          build_operator(base.wavelength, DEFAULT_GRID))
    assert x.shape == (n, 2, DEFAULT_GRID.npix)
    xb, nb = run_graph(session, flux, np.where(mask, 0, ivar),
                       build_operator(base.wavelength, DEFAULT_GRID), block_rows=64)
    np.testing.assert_array_equal(xb, x)  # rows are independent: blocks change no bit
    np.testing.assert_array_equal(nb, n_good)
    worst = 0.0
    for i, p in enumerate(preprocess_many(spectra, DEFAULT_GRID)):
        if isinstance(p, SpectrumError):
            assert i == 7 and not x[i].any() and n_good[i] == 0
            continue
        worst = max(worst, assert_parity(x[i], p.x))
    assert worst <= TOL


def test_other_grid(session):
    """A model grid other than the default: the graph is built for its grid."""
    grid = LogLambdaGrid.from_range(3800.0, 9000.0, 2e-4)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(preprocess_graph(grid).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    check(sess, sdss_like_spectrum(), grid)


def test_an_exactly_aligned_grid_is_still_a_band_of_two(session):
    """Why there is no Slice/Pad shortcut: preprocess.py's input edges are arithmetic
    midpoints, the grid's geometric, so each output pixel keeps a ~2.9e-5 sliver of its
    neighbour, and the graph still matches preprocess.py with it."""
    wave = DEFAULT_GRID.wavelength[100:3000].copy()
    op = build_operator(wave, DEFAULT_GRID)
    assert op.band == 2
    sliver = op.weights[102:2998, 0] / op.weights[102:2998].sum(axis=1)
    assert np.all((sliver > 2e-5) & (sliver < 4e-5))
    rng = np.random.default_rng(5)
    check(session, make_spectrum(wave, rng.normal(10, 3, wave.size).astype(np.float32),
                                 np.full(wave.size, 4.0, np.float32)))

def test_cache_returns_the_same_operator_for_the_same_bytes_and_is_bounded():
    cache = OperatorCache(maxsize=3)
    wave = 10 ** (3.58 + 1e-4 * np.arange(3000))
    op = build_operator(wave, DEFAULT_GRID, cache)
    assert build_operator(wave.copy(), DEFAULT_GRID, cache) is op  # by value, not identity
    assert build_operator(wave[::-1][::-1], DEFAULT_GRID, cache) is op  # non-contiguous view
    other_grid = LogLambdaGrid.from_range(3600.0, 9200.0, 2e-4)
    assert build_operator(wave, other_grid, cache) is not op
    for shift in (1.0, 2.0, 3.0):
        build_operator(wave + shift, DEFAULT_GRID, cache)
    assert len(cache) == 3
    assert build_operator(wave, DEFAULT_GRID, cache) is not op  # evicted, rebuilt
    assert len(cache) == 3


def test_the_graph_is_valid_onnx_with_cpu_ops_only():
    model = preprocess_graph(DEFAULT_GRID)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    ops = {n.op_type for n in model.graph.node}
    assert "MatMul" not in ops  # Gather·Mul·ReduceSum: no FMA-dispatched kernels
