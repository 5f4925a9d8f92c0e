"""How the answers of a cube's sky patches become one answer (service.inference.lightcone)."""

from __future__ import annotations

import numpy as np

from service.inference.lightcone import PATCH_CHI2_WARN, combine_patches


def test_agreeing_patches_keep_their_sigma():
    """No 1/√k: patches share the model's systematic error, so k copies are not k data."""
    mean = np.tile([0.3, 40.0], (9, 1))
    sigma = np.tile([0.02, 0.5], (9, 1))
    m, s, chi2 = combine_patches(mean, sigma)
    np.testing.assert_allclose(m, [0.3, 40.0])
    np.testing.assert_allclose(s, [0.02, 0.5])
    np.testing.assert_allclose(chi2, 0.0)


def test_disagreeing_patches_widen_the_answer_and_are_flagged():
    mean = np.array([[0.25], [0.35]])
    sigma = np.array([[0.01], [0.01]])
    m, s, chi2 = combine_patches(mean, sigma)
    np.testing.assert_allclose(m, [0.30])
    np.testing.assert_allclose(s, [np.sqrt(0.01**2 + 0.05**2)])  # the mixture's σ
    assert chi2[0] > PATCH_CHI2_WARN


def test_one_patch_is_the_model_answer():
    m, s, chi2 = combine_patches(np.array([[1.0, 2.0]]), np.array([[0.1, 0.2]]))
    np.testing.assert_allclose(m, [1.0, 2.0])
    np.testing.assert_allclose(s, [0.1, 0.2])
    assert not chi2.any()
