"""Small helpers the lightcone tests share."""

from __future__ import annotations

import numpy as np


def toy_cube(shape=(8, 8, 40), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 10, size=shape) - 5).astype(np.float32)
