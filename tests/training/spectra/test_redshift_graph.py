"""The in-graph χ²(z) fit: the baseline's numbers in float32, known redshifts, honest warnings.

Tolerances come from float32 arithmetic. χ² = Σw·f² − bᵀA⁻¹b is a difference of two numbers
of size Σw·f²; A and b are float32 sums of up to ~12,000 products (rounding ~√n·ε ≈ 7e-6
each, ε = 6e-8) solved with condition numbers up to ~10², and the graph's ridge (1e-7·tr A,
the baseline's is 1e-9 in float64) adds ~1e-7·cond. So |χ²_onnx − χ²_float64| ≲ 5e-5·Σw·f²:
measured ≤ 7e-6 on 110 simulated spectra with AVX-512 SGEMM; other x86-64 kernels (SSE,
AVX2) change the summation order, not the √n·ε scale. Redshifts agree to the parabola's
resolution once the curves do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.spectra import DEFAULT_GRID, preprocess
from training.spectra.baseline import _parabola, chi2_fft, legendre, redshift_sets, spike_free
from training.spectra.config import Effects, SimConfig
from training.spectra.labels import LABEL_NAMES, TOP_OF_LABEL
from training.spectra.redshift_graph import (
    LN10,
    WARN_AMBIGUOUS,
    WARN_NO_FIT,
    WARN_POOR_FIT,
    RedshiftGraphConfig,
    build_redshift_model,
    fuse_with_classifier,
)
from training.spectra.simulate import generate, simulate_one

pytestmark = pytest.mark.usefixtures("shared_data")

REPO = Path(__file__).resolve().parents[3]
CLASSIFIER = REPO / "models" / "spectrum_classifier" / "2" / "model.onnx"
CHI2_REL_TOL = 5e-5  # of Σ w·f², see the module docstring
D = DEFAULT_GRID.dloglam


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"spectrum": x.astype(np.float32)})))


def f_w(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flux and ivar·s² as baseline.TemplateFitter._fit derives them (float64)."""
    x = x.astype(np.float64)
    wt = np.clip(x[:, 1], 0.0, 0.999)
    return x[:, 0], wt / (1 - wt)


def model_input(flux: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(1, 2, npix) model input from flux and ivar·s² (the weight channel is w/(1+w))."""
    return np.stack([flux, w / (1 + w)])[None].astype(np.float32)


@pytest.fixture(scope="module")
def curves_session() -> ort.InferenceSession:
    return session(build_redshift_model(RedshiftGraphConfig(curves=True)))


@pytest.fixture(scope="module")
def simulated() -> dict[str, np.ndarray]:
    cfg = SimConfig(class_fractions={"GALAXY": 0.5, "QSO": 0.5}, snr_min=3.0)
    return generate(cfg, 10, 5, "test", cache_dir=None, progress=False)


def assert_curves_match(curve: np.ndarray, s_c: np.ndarray, ref: np.ndarray,
                        shifts: np.ndarray, wff: np.ndarray) -> None:
    """The graph's χ² windows (B, candidates, 2W+1) around its shifts ``s_c`` equal the numpy
    curves ``ref`` (B, shifts) wherever the window lies on the search grid."""
    W = (curve.shape[2] - 1) // 2
    for b in range(len(curve)):
        for c in range(s_c.shape[1]):
            s = s_c[b, c] + np.arange(-W, W + 1)
            ok = (s >= shifts[0]) & (s <= shifts[-1])
            np.testing.assert_allclose(curve[b, c][ok], ref[b, s[ok] - shifts[0]],
                                       rtol=0, atol=CHI2_REL_TOL * wff[b])


def test_chi2_curve_and_redshift_match_the_numpy_baseline(curves_session, simulated):
    x = simulated["x"].astype(np.float32)
    out = run(curves_session, x)
    f, w = f_w(x)
    wff = (w * f * f).sum(1)
    sets = redshift_sets()
    P = legendre(DEFAULT_GRID.npix)
    for cls in ("GALAXY", "QSO"):
        key = cls.lower()
        ref, shifts = chi2_fft(f, w, sets[cls], P)
        curve, s_c = out[f"chi2_curve_{key}"], out[f"shifts_{key}"]
        assert_curves_match(curve, s_c, ref, shifts, wff)
        W = (curve.shape[2] - 1) // 2
        for b in range(len(x)):
            # where the graph's window holds the baseline's own minimum, the parabola agrees
            i = ref[b].argmin()
            if np.any(np.abs(s_c[b] - shifts[i]) < W):
                z_ref = 10 ** ((shifts[i] + _parabola(ref[b:b + 1], np.array([i]))[0]) * D) - 1
                assert abs(out[f"z_{key}"][b] - z_ref) / (1 + z_ref) < 0.05 * LN10 * D, (cls, b)


@pytest.mark.parametrize("n_poly", [3, 4, 5])
def test_quasar_legendre_terms_match_the_numpy_baseline(simulated, n_poly):
    """qso_n_poly (3 served; 5 cuts the baseline's quasar outliers): the graph's quasar χ²
    curves are chi2_fft's with as many Legendre terms, to the same tolerance as without them
    (max |Δχ²|/Σw·f² on these spectra: 1.1e-5 for 3, 4 and 5 terms — terms beyond FOLD_POLY
    are gathered, folding them would give 2.2e-5 for 4, 6.6e-5 for 5), and z to the parabola's
    resolution (measured ≤ 0.005 px)."""
    sess = session(build_redshift_model(RedshiftGraphConfig(curves=True, qso_n_poly=n_poly)))
    x = simulated["x"].astype(np.float32)
    out = run(sess, x)
    f, w = f_w(x)
    wff = (w * f * f).sum(1)
    rs = redshift_sets()["QSO"]
    rs.n_poly = n_poly
    ref, shifts = chi2_fft(f, w, rs, legendre(DEFAULT_GRID.npix, n_poly))
    curve, s_c = out["chi2_curve_qso"], out["shifts_qso"]
    assert_curves_match(curve, s_c, ref, shifts, wff)
    W = (curve.shape[2] - 1) // 2
    for b in range(len(x)):
        i = ref[b].argmin()
        if abs(s_c[b, 0] - shifts[i]) < W:
            z_ref = 10 ** ((shifts[i] + _parabola(ref[b:b + 1], np.array([i]))[0]) * D) - 1
            assert abs(out["z_qso"][b] - z_ref) / (1 + z_ref) < 0.05 * LN10 * D, b


def test_robust_weights_match_the_numpy_reference_and_remove_injected_spikes(simulated):
    """spike_sigma: the graph's χ² curves are the numpy fit's with baseline.spike_free weights,
    and 40σ single-pixel hits injected into the spectra get no weight (their χ² curves then
    equal those of the spectra without them, up to the pixels the clip also took there)."""
    k = 5.0
    sess = session(build_redshift_model(RedshiftGraphConfig(curves=True, spike_sigma=k)))
    x = simulated["x"].astype(np.float32)
    _, w = f_w(x)
    rng = np.random.default_rng(3)
    hit = rng.choice(np.flatnonzero(w[0] > 0), 12, replace=False)
    x_hit = x.copy()
    x_hit[0, 0, hit] += (40.0 / np.sqrt(w[0, hit])).astype(np.float32)
    f_hit, _ = f_w(x_hit)
    w_clean = spike_free(f_hit, w, k)
    assert np.all(w_clean[0, hit] == 0)
    out = run(sess, x_hit)
    wff = (w_clean * f_hit * f_hit).sum(1)
    P = legendre(DEFAULT_GRID.npix)
    for cls, rs in redshift_sets().items():
        ref, shifts = chi2_fft(f_hit, w_clean, rs, P)
        curve, s_c = out[f"chi2_curve_{cls.lower()}"], out[f"shifts_{cls.lower()}"]
        assert_curves_match(curve[:, :1], s_c[:, :1], ref, shifts, wff)


def test_the_true_class_fit_recovers_clean_simulated_redshifts(curves_session):
    """Bright, artefact-free spectra (as test_baseline): each class's own fit finds its z."""
    cfg = SimConfig(effects=Effects(noise=False, sky_residuals=False, outliers=False,
                                    masks=False, fluxcal=False, telluric=False, bal=False))
    # QSO: simulated from Redrock or SDSS quasar templates, fitted with SDSS's (a few 1e-3 apart)
    for label, z, tol in (("GALAXY", 0.3, 3e-4), ("GALAXY", 0.72, 3e-4), ("QSO", 2.2, 1e-2),
                          ("QSO", 0.9, 1e-2)):
        spec, _ = simulate_one(0, 9, 1, cfg, survey_name="boss", label=LABEL_NAMES.index(label),
                               snr=30.0, z=z)
        out = run(curves_session, preprocess(spec, DEFAULT_GRID).x[None])
        assert abs(out[f"z_{label.lower()}"][0] - z) / (1 + z) < tol, (label, z)


def shifted(T: np.ndarray, J0: int, s: int) -> np.ndarray:
    """A rest-frame template row seen at whole-pixel shift s on the model grid."""
    return T[np.arange(DEFAULT_GRID.npix) - s + J0]


def test_a_known_shift_is_recovered_with_an_honest_sigma(curves_session):
    """Template 0 at s0 + 0.3 px (linear interpolation), S/N ~10: z to ≪ 1 px, σ_z ~ the scatter."""
    rs = redshift_sets()["GALAXY"]
    rng = np.random.default_rng(3)
    s0, frac = 2000, 0.3
    flux = (1 - frac) * shifted(rs.T[0], rs.J0, s0) + frac * shifted(rs.T[0], rs.J0, s0 + 1)
    flux = flux / np.median(np.abs(flux))
    w = np.full_like(flux, 100.0)
    zs = []
    for _ in range(4):
        x = model_input(flux + rng.normal(0, 0.1, flux.size), w)
        out = run(curves_session, x)
        zs.append(out["z_galaxy"][0])
        assert out["z_warning_galaxy"][0] & WARN_AMBIGUOUS == 0
    z_true = 10 ** ((s0 + frac) * D) - 1
    err = np.abs(np.array(zs) - z_true) / (1 + z_true)
    assert err.max() < 0.2 * LN10 * D  # 0.2 px
    sigma = out["z_sigma_galaxy"][0] / (1 + z_true)
    assert 0 < sigma < 0.1 * LN10 * D
    assert np.std(zs) / (1 + z_true) < 5 * sigma


def test_z_warning_flags_two_equal_minima_and_a_poor_fit(curves_session):
    rs = redshift_sets()["GALAXY"]
    one = shifted(rs.T[0], rs.J0, 900)
    two = 0.5 * (one + shifted(rs.T[0], rs.J0, 2600))  # the same galaxy at two redshifts
    w = np.ones(DEFAULT_GRID.npix)
    rng = np.random.default_rng(0)
    sawtooth = 1 + 2 * ((np.arange(DEFAULT_GRID.npix) % 37) / 37 - 0.5)  # no galaxy looks like this
    x = np.concatenate([model_input(one + rng.normal(0, 0.3, one.size), w),
                        model_input(two, w),
                        model_input(sawtooth, np.full(DEFAULT_GRID.npix, 100.0))])
    warn = run(curves_session, x)["z_warning_galaxy"]
    assert warn[0] & WARN_AMBIGUOUS == 0 and warn[0] & WARN_POOR_FIT == 0
    assert warn[1] & WARN_AMBIGUOUS
    assert warn[2] & WARN_POOR_FIT


def test_fused_graph_keeps_the_classifier_and_takes_z_from_its_top_class(simulated):
    base = session(onnx.load(str(CLASSIFIER)))
    fused = session(fuse_with_classifier(onnx.load(str(CLASSIFIER))))
    x = simulated["x"][:6]
    ref, out = run(base, x), run(fused, x)
    for key in ("probs", "entropy", "epistemic"):
        np.testing.assert_array_equal(out[key], ref[key])
    np.testing.assert_array_equal(out["z_network"], ref["z"])
    top = (out["probs"] @ np.eye(3)[TOP_OF_LABEL]).argmax(1)
    expect = np.where(top == 0, out["z_galaxy"], np.where(top == 1, out["z_qso"], 0.0))
    np.testing.assert_array_equal(out["z"], expect)
    assert out["z_warning"].dtype == np.int32
    assert np.all((out["z_warning"] & WARN_NO_FIT > 0) == (top == 2))


def binned_chi2_reference(f: np.ndarray, w: np.ndarray, rs, P: np.ndarray, D: int,
                          shifts: np.ndarray) -> np.ndarray:
    """(N, len(shifts)) float64 χ² of the coarse stage's model, solved jointly and directly:
    templates and polynomials averaged over D-pixel bins, fitted to w and w·f summed per bin
    (the graph eliminates the polynomials once per spectrum instead, redshift_graph._coarse_chi2)."""
    npix = f.shape[1]
    n_bins = -(-npix // D)
    pad = n_bins * D - npix
    bins = lambda a: np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)]).reshape(*a.shape[:-1], n_bins, D)
    wb, wfb = bins(w).sum(-1), bins(w * f).sum(-1)
    Pb = bins(P[:rs.n_poly]).mean(-1)
    out = np.empty((len(f), len(shifts)))
    for k, s in enumerate(shifts):
        idx = np.arange(n_bins * D) - s + rs.J0
        ok = (idx >= 0) & (idx < rs.T.shape[1])
        T = np.where(ok, rs.T[:, np.clip(idx, 0, rs.T.shape[1] - 1)], 0.0)
        X = np.concatenate([T.reshape(len(T), n_bins, D).mean(-1), Pb])  # (K + nP, bins)
        A = np.einsum("kp,np,lp->nkl", X, wb, X)
        b = wfb @ X.T
        A += np.eye(len(X)) * 1e-12 * np.trace(A, axis1=1, axis2=2)[:, None, None]
        out[:, k] = (w * f * f).sum(1) - (b * np.linalg.solve(A, b[..., None])[..., 0]).sum(1)
    return out


@pytest.mark.parametrize("n_poly", [3, 5])
def test_coarse_chi2_with_polynomials_eliminated_per_spectrum_is_the_joint_solve(simulated, n_poly):
    """The coarse curve (templates' Schur complement after a per-spectrum polynomial fit) is
    the float64 joint least-squares χ² of the binned model, to the fine curves' tolerance
    (max |Δχ²|/Σw·f² on these spectra: galaxies 4.4e-6; quasars 1.5e-5 with 3 terms and
    1.7e-5 with 5, where the former per-shift joint LDLᵀ reached 9.7e-5)."""
    sess = session(build_redshift_model(RedshiftGraphConfig(curves=True, qso_n_poly=n_poly)))
    x = simulated["x"].astype(np.float32)
    out = run(sess, x)
    f, w = f_w(x)
    wff = (w * f * f).sum(1)
    cfg = RedshiftGraphConfig()
    for cls, rs in redshift_sets().items():
        if cls == "QSO":
            rs.n_poly = n_poly
        curve = out[f"chi2_coarse_{cls.lower()}"]
        D = cfg.coarse_bin[cls]
        k = np.arange(0, curve.shape[1], 7)  # every 7th coarse shift: the cost is the float64 solves
        ref = binned_chi2_reference(f, w, rs, legendre(DEFAULT_GRID.npix, rs.n_poly), D,
                                    rs.s_min + D * k)
        rel = np.abs(curve[:, k] - ref) / wff[:, None]
        assert rel.max() < CHI2_REL_TOL, (cls, rel.max())
