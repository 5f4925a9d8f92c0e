"""Do the lightcone maps mean something? A deletion test on the shipped v2 graphs.

For each held-out test cube of v2's own dataset (fixtures of tests/training/lightcone), the
1 % most salient voxels (|∂θ/∂x| from saliency.onnx, run
on ONNX Runtime as the service runs it) are replaced by their channel's sky mean — the
fluctuation there is removed, the global signal kept — and the explained estimate is
re-run through model.onnx. The same is done for as many random voxels (5 draws). A real map
moves the estimate much more than random voxels do; a broken map (the same values shuffled
over the cube) does not — the second test checks the test itself can fail.
Measured on v2 (ζ, 6 cubes): salient 0.8–3.2 vs random 0.02–0.09 (ζ units), 10–60×.
Not used: ../shared's reference 21cmFAST run. v2 reads it far out of distribution (no
absorption trough on its redshift range; ζ = 0.8 against a prior of [10, 250]), and there the
map fails this test (0.04 vs 0.07): a gradient explains the model, and off its training
distribution the model is not reading physics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.common.ort import ort_session

REPO = Path(__file__).resolve().parents[3]
V2 = REPO / "models" / "lightcone_regressor" / "2"
CUBES = REPO / "tests" / "training" / "lightcone" / "fixtures" / "saliency_cubes.npz"
PARAMS = {"HII_EFF_FACTOR": 4, "L_X": 1}
FRACTION = 0.01


def cubes() -> np.ndarray:
    return np.load(CUBES)["x"].astype(np.float32)


@pytest.fixture(scope="module")
def sessions():
    return ort_session(V2 / "saliency.onnx"), ort_session(V2 / "model.onnx")


def deletion(x: np.ndarray, k: int, score: np.ndarray, fwd, rng) -> tuple[float, float]:
    """(|Δθ| with the top-scored voxels removed, mean |Δθ| over 5 random sets of as many)."""
    fill = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape).reshape(-1)
    base = fwd.run(None, {"lightcone": x[None]})[0][0, k]
    n = int(FRACTION * x.size)

    def delta(idx: np.ndarray) -> float:
        y = x.reshape(-1).copy()
        y[idx] = fill[idx]
        return float(abs(fwd.run(None, {"lightcone": y.reshape(1, *x.shape)})[0][0, k] - base))

    top = np.argsort(score.reshape(-1))[::-1][:n]
    rand = np.mean([delta(rng.choice(x.size, n, replace=False)) for _ in range(5)])
    return delta(top), float(rand)


@pytest.mark.parametrize("param", sorted(PARAMS))
def test_salient_voxels_move_the_estimate_more_than_random_ones(sessions, param):
    sal, fwd = sessions
    k = PARAMS[param]
    x = cubes()
    t = np.zeros((len(x), 10), np.float32)
    t[:, k] = 1.0
    g = sal.run(["saliency"], {"lightcone": x, "target": t})[0]
    rng = np.random.default_rng(0)
    res = np.array([deletion(x[i], k, np.abs(g[i]), fwd, rng) for i in range(len(x))])
    print(param, "salient", res[:, 0].round(4), "random", res[:, 1].round(4))
    assert np.all(res[:, 0] > 3 * res[:, 1]), res
    assert res[:, 0].mean() > 10 * res[:, 1].mean(), res


def test_a_shuffled_map_fails_the_same_test(sessions):
    sal, fwd = sessions
    x = cubes()[:4]
    t = np.zeros((len(x), 10), np.float32)
    t[:, 4] = 1.0
    g = sal.run(["saliency"], {"lightcone": x, "target": t})[0]
    rng = np.random.default_rng(1)
    res = np.array([deletion(x[i], 4, rng.permutation(np.abs(g[i]).reshape(-1)), fwd, rng)
                    for i in range(len(x))])
    assert not res[:, 0].mean() > 10 * res[:, 1].mean(), res
