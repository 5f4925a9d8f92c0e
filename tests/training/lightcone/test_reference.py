"""The training-set reference a lightcone version ships (training.lightcone.reference): built
from model-grid cubes by the service's own preprocessing, one component per kind of input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.lightcones.statistics import TrainingReference
from training.lightcone.config import load_config
from training.lightcone.reference import components

TINY = Path(__file__).resolve().parents[3] / "training" / "lightcone" / "configs" / "lightcone_tiny.json"


class FakeNoise:
    """ThermalNoise's interface (draw_times, sample) with white noise: no tools21cm needed."""

    def draw_times(self, rng, n, time_range):
        return None

    def sample(self, rng, n, times=None):
        return rng.normal(0, 30.0, (n, *self.shape))


def test_components_are_the_noisy_draws_and_the_noiseless_cubes():
    cfg = load_config(TINY)
    grid = cfg.grid.model_grid()
    cubes = np.random.default_rng(0).normal(0, 20, (30, *grid.shape[1:])).astype(np.float32)
    noise = FakeNoise()
    noise.shape = grid.shape[1:]
    observed, noiseless = components(cubes, cfg, noise, 3, 0, n_chunks=4)
    assert (observed.name, observed.n_rows) == ("observed", 90)
    assert (noiseless.name, noiseless.n_rows) == ("noiseless", 30)
    ref = TrainingReference(4, (observed, noiseless), 30, "test")
    back = TrainingReference.from_json(ref.to_json())
    assert [c.name for c in back.components] == ["observed", "noiseless"]
    (only,) = components(cubes, cfg, None, 3, 0, n_chunks=4)  # a model trained without noise
    assert only.name == "noiseless"
