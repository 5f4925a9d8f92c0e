"""The training-set distance of a lightcone (service.lightcones.statistics): statistics that
follow the signal, a threshold that holds for cubes like the training set's, a far cube flagged."""

from __future__ import annotations

import numpy as np
import pytest

from service.lightcones.statistics import (
    QUANTILE,
    Component,
    TrainingReference,
    summary_statistics,
)


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


def reference(stats_by_name: dict[str, np.ndarray], n_chunks: int) -> TrainingReference:
    comps = tuple(Component.fit(k, v) for k, v in stats_by_name.items())
    return TrainingReference(n_chunks, comps, 0, "test")


def test_reference_flags_about_one_percent_of_its_own_kind_and_a_far_cube():
    ref = reference({"observed": summary_statistics(cubes(300, 1.0, 1), 4)}, 4)
    fresh = np.array([d.score for d in ref.distances(cubes(400, 1.0, 2))])
    assert np.mean(fresh > 1.0) < 4 * (1 - QUANTILE)
    assert all(d.score > 1.0 for d in ref.distances(cubes(5, 30.0, 3)))  # K sent as mK, say


def test_a_cube_is_judged_against_the_nearest_kind_of_training_input():
    """Two kinds of input (faint and bright, as noiseless and noisy cubes are): each is inside,
    judged against its own; a cube between the two kinds' ranges is outside both."""
    ref = reference({"faint": summary_statistics(cubes(200, 1.0, 1), 4),
                     "bright": summary_statistics(cubes(200, 10.0, 2), 4)}, 4)
    faint, bright = ref.distances(cubes(1, 1.0, 3))[0], ref.distances(cubes(1, 10.0, 4))[0]
    assert (faint.nearest, bright.nearest) == ("faint", "bright")
    assert faint.score < 1.0 and bright.score < 1.0
    assert ref.distances(cubes(1, 3.0, 5))[0].score > 1.0


def test_reference_round_trips_and_refuses_an_unknown_kind():
    ref = reference({"a": summary_statistics(cubes(40, 1.0, 4), 2)}, 2)
    back = TrainingReference.from_json(ref.to_json())
    x = cubes(3, 1.0, 5)
    assert back.distances(x) == ref.distances(x)
    with pytest.raises(ValueError):
        TrainingReference.from_json({**ref.to_json(), "kind": "other"})
    with pytest.raises(ValueError):
        TrainingReference.from_json({**ref.to_json(), "n_chunks": 3})
    with pytest.raises(ValueError):
        TrainingReference.from_json({**ref.to_json(), "components": []})


def test_noise_draws_of_one_simulation_are_left_out_together():
    """Four noise draws of each simulation: judged with its siblings in the fit, a cube looks
    closer to the training set than a new simulation would; left out as a group, it does not."""
    signal = summary_statistics(cubes(60, 1.0, 6), 4)
    draws = np.repeat(signal, 4, axis=0) + np.random.default_rng(7).normal(0, 0.01,
                                                                           (240, signal.shape[1]))
    rowwise = Component.fit("rows", draws)
    grouped = Component.fit("groups", draws, groups=np.repeat(np.arange(60), 4))
    assert grouped.threshold_d2 > 1.1 * rowwise.threshold_d2  # 24.2 against 19.8 here
