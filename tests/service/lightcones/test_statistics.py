"""The training-set distance of a lightcone (service.lightcones.statistics): statistics that
follow the signal, a threshold that holds for cubes like the training set's, a far cube flagged."""

from __future__ import annotations

import numpy as np
import pytest

from service.lightcones.statistics import QUANTILE, TrainingReference, summary_statistics


def cubes(n: int, sigma: float, seed: int) -> np.ndarray:
    """Model inputs (n, 1, 8, 8, 32): white noise of ``sigma`` with a smooth component."""
    rng = np.random.default_rng(seed)
    white = rng.normal(0, sigma, (n, 1, 8, 8, 32))
    smooth = np.repeat(np.repeat(rng.normal(0, sigma, (n, 1, 4, 4, 32)), 2, axis=2), 2, axis=3)
    return white + smooth


def test_statistics_follow_amplitude_and_scale():
    x = cubes(3, 1.0, 0)
    s = summary_statistics(x, n_chunks=4)
    assert s.shape == (3, 8)
    s10 = summary_statistics(10 * x, n_chunks=4)
    np.testing.assert_allclose(s10[:, 0::2] - s[:, 0::2], np.log(10), atol=2e-3)  # log rms
    np.testing.assert_allclose(s10[:, 1::2], s[:, 1::2], atol=2e-3)  # the slope: unchanged
    smooth_only = np.repeat(np.repeat(x[..., ::2, ::2, :], 2, axis=2), 2, axis=3)
    assert (summary_statistics(smooth_only, 4)[:, 1::2] > s[:, 1::2]).all()  # more large-scale


def test_reference_flags_about_one_percent_of_its_own_kind_and_a_far_cube():
    ref = TrainingReference.fit(summary_statistics(cubes(300, 1.0, 1), 4), 4, "test")
    fresh = ref.distance(cubes(400, 1.0, 2))
    assert np.mean(fresh > ref.threshold_d2) < 4 * (1 - QUANTILE)
    assert (ref.distance(cubes(5, 30.0, 3)) > ref.threshold_d2).all()  # K sent as mK, say


def test_reference_round_trips_and_refuses_an_unknown_kind():
    ref = TrainingReference.fit(summary_statistics(cubes(40, 1.0, 4), 2), 2, "test")
    back = TrainingReference.from_json(ref.to_json())
    x = cubes(3, 1.0, 5)
    np.testing.assert_allclose(back.distance(x), ref.distance(x))
    with pytest.raises(ValueError):
        TrainingReference.from_json({**ref.to_json(), "kind": "other"})
    with pytest.raises(ValueError):
        TrainingReference.from_json({**ref.to_json(), "n_chunks": 3})
