"""The saliency methods' row expansion and rescaling, and the yield to classification."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from service.inference import saliency as sal
from service.inference.saliency import MethodParams, SaliencyError, expand, rescale, robust_range


def spectrum(npix: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((2, npix), np.float32)
    x[0] = 1 + 0.1 * rng.normal(size=npix)
    x[0, 100] = 50.0  # a clipped cosmic ray must not set the noise scale
    x[1] = 0.5
    x[1, 400:] = 0.0  # masked tail
    return x


def test_smoothgrad_rows_add_seeded_noise_to_flux_only():
    x = spectrum()
    p = MethodParams(method="smoothgrad", samples=64, sigma=0.2, seed=3)
    rows, base = expand(x, p)
    assert base is None and rows.shape == (64, 2, 512)
    np.testing.assert_array_equal(rows[:, 1], np.broadcast_to(x[1], (64, 512)))
    noise = rows[:, 0] - x[0]
    r = robust_range(x)
    assert r < 2.0  # p99 − p1 of good pixels: the spike at 50 does not count
    assert np.std(noise) == pytest.approx(0.2 * r, rel=0.05)
    np.testing.assert_array_equal(expand(x, p)[0], rows)  # same seed, same rows


def test_integrated_gradient_rows_walk_the_straight_path_at_midpoints():
    x = spectrum()
    rows, base = expand(x, MethodParams(method="integrated_gradients", steps=4))
    np.testing.assert_array_equal(base, np.zeros_like(x))
    for k, a in enumerate([0.125, 0.375, 0.625, 0.875]):
        np.testing.assert_allclose(rows[k], a * x, rtol=1e-6)
    rows, base = expand(x, MethodParams(method="integrated_gradients", steps=2,
                                        baseline="continuum"))
    assert np.allclose(base[0], np.median(x[0][x[1] > 0])) and (base[1] == x[1]).all()


def test_rescaled_gradients_are_exact_log_and_logit_derivatives():
    g = np.ones((2, 2, 3), np.float32)
    p = np.array([0.5, 0.2])
    np.testing.assert_allclose(rescale(g, p, "log_probability")[:, 0, 0], [2.0, 5.0])
    np.testing.assert_allclose(rescale(g, p, "logit")[:, 0, 0], [4.0, 1 / 0.16], rtol=1e-6)
    assert rescale(g, p, "probability") is g


@pytest.mark.parametrize("kw", [{"method": "occlusion"}, {"samples": 0},
                                {"steps": 10_000}, {"sigma": -1.0}])
def test_bad_method_parameters_raise(kw):
    with pytest.raises(SaliencyError):
        MethodParams(**kw).check()


def test_saliency_batches_wait_while_classification_rows_are_queued(monkeypatch):
    depths = iter([3, 2, 1, 0, 0])
    polls = []

    class Batcher:
        @property
        def depth(self):
            d = next(depths)
            polls.append(d)
            return d

    fake = SimpleNamespace(spectra=SimpleNamespace(batcher=Batcher()))
    monkeypatch.setattr(sal.time, "sleep", lambda s: None)
    sal.SaliencyPipeline._yield_to_classification(fake)
    assert polls == [3, 2, 1, 0]  # waited through three polls, went on once the queue drained
