"""Calibration fits recover what they should on synthetic data with a known answer."""

from __future__ import annotations

import numpy as np

from training.spectra.calibrate import (
    ece,
    ensemble_probs,
    fit_temperature,
    fit_z_sigma_scale,
    softmax,
)


def test_temperature_recovers_an_overconfident_ensemble():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 5))
    y = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    members = np.stack([2.5 * true_logits + rng.normal(0, 0.05, true_logits.shape)
                        for _ in range(3)])  # three members, all 2.5× too sharp
    T = fit_temperature(members, y)
    assert 2.0 < T < 3.1
    assert ece(ensemble_probs(members, T), y) < ece(ensemble_probs(members, 1.0), y)


def test_ece_is_zero_for_perfect_confidence_and_large_when_wrong():
    y = np.array([0, 1, 2, 0])
    perfect = np.eye(3)[y]
    assert ece(perfect, y) == 0.0
    assert ece(np.eye(3)[(y + 1) % 3], y) == 1.0


def test_z_sigma_scale_brings_one_sigma_coverage_to_68_percent():
    rng = np.random.default_rng(1)
    n = 20000
    t_true = rng.uniform(0, 1.5, n)
    sigma = rng.uniform(0.005, 0.05, n)
    mu = t_true + rng.normal(0, 2.0 * sigma)  # errors twice the claimed σ
    s = fit_z_sigma_scale(mu[None], np.log(sigma**2)[None], np.expm1(t_true))
    assert 1.8 < s < 2.2
