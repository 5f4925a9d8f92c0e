"""How far a model input lies from the training set: a few summary statistics per cube, and
their distance to those of the cubes the model was trained on.

Why: a regressor answers whatever it is given. A cube from another simulator setup (another
21cmFAST version, other astrophysics switches, a box in K instead of mK) goes through the same
grid and gets confident-looking numbers. Checking the setup (cell sizes, channel widths, the
range of the brightness) catches some of it (:func:`~service.lightcones.preprocess.setup_warnings`);
this catches the rest: the signal itself looks different.

The statistics (:func:`summary_statistics`), on the model input (after resampling, channel-mean
removal and scaling, exactly what the network sees), per line-of-sight chunk of the grid:
  - log rms: how bright the fluctuations are (the integral of the power spectrum) — heating
    and reionisation set it, redshift by redshift;
  - log(rms of the 2 × 2 sky-block means / rms): how much of that power is on scales larger
    than two cells (the slope of the sky power spectrum; noise is flat, ionised bubbles red).
Two numbers per chunk, 2 × ``n_chunks`` per cube.

The distance (:class:`TrainingReference`): the Mahalanobis distance d² of a cube's statistics to
the mean of the training cubes', with their covariance shrunk a little toward its diagonal (a
few hundred cubes estimate 16 × 16 numbers). The threshold is not a χ² quantile but the
training cubes' own: the 99th percentile of d² of each training cube left out of the fit, so
1 % of cubes like the training set's are flagged, whatever the statistics' distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

KIND = "lightcone-statistics-1"  # what a reference was built with; refused if unknown
EPS = 1e-3  # floor of an rms, in model-input units (0.1 mK at the 100 mK scale)
SHRINK = 0.2  # weight of the diagonal in the covariance
QUANTILE = 0.99


def summary_statistics(x: np.ndarray, n_chunks: int = 8) -> np.ndarray:
    """Model inputs (..., 1, n_x, n_y, n_los) → statistics (..., 2·n_chunks), float64."""
    x = np.asarray(x, dtype=np.float64)[..., 0, :, :, :]
    nx, ny, nl = x.shape[-3:]
    chunks = np.array_split(np.arange(nl), n_chunks)
    bx, by = nx // 2 * 2, ny // 2 * 2
    out = []
    for idx in chunks:
        c = x[..., idx]
        rms = np.sqrt(np.mean(c ** 2, axis=(-3, -2, -1)))
        blocks = c[..., :bx, :by, :].reshape(*c.shape[:-3], bx // 2, 2, by // 2, 2, len(idx))
        big = np.sqrt(np.mean(blocks.mean(axis=(-4, -2)) ** 2, axis=(-3, -2, -1)))
        out += [np.log(rms + EPS), np.log((big + EPS) / (rms + EPS))]
    return np.stack(out, axis=-1)


def _fit(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = stats.mean(axis=0)
    cov = np.cov(stats, rowvar=False)
    cov = (1 - SHRINK) * cov + SHRINK * np.diag(np.diag(cov))
    return mean, np.linalg.inv(cov)


def _d2(stats: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = stats - mean
    return np.einsum("...i,ij,...j->...", d, precision, d)


@dataclass(frozen=True)
class TrainingReference:
    """The training cubes' statistics, summarised: what a served version carries in its
    manifest (``reference_statistics``) to say how unusual a cube is."""

    n_chunks: int
    mean: np.ndarray
    precision: np.ndarray
    threshold_d2: float
    n_cubes: int
    source: str = ""

    @classmethod
    def fit(cls, stats: np.ndarray, n_chunks: int, source: str = "") -> TrainingReference:
        """From the statistics of the training cubes (n, 2·n_chunks); the threshold from each
        cube left out in turn."""
        n = len(stats)
        loo = np.empty(n)
        for i in range(n):
            keep = np.arange(n) != i
            loo[i] = _d2(stats[i], *_fit(stats[keep]))
        mean, precision = _fit(stats)
        return cls(n_chunks, mean, precision, float(np.quantile(loo, QUANTILE)), n, source)

    def distance(self, x: np.ndarray) -> np.ndarray:
        """d² of model inputs (..., 1, n_x, n_y, n_los) to the training cubes."""
        return _d2(summary_statistics(x, self.n_chunks), self.mean, self.precision)

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "n_chunks": self.n_chunks, "mean": self.mean.tolist(),
                "precision": self.precision.tolist(), "threshold_d2": self.threshold_d2,
                "quantile": QUANTILE, "n_cubes": self.n_cubes, "source": self.source}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainingReference:
        if d.get("kind") != KIND:
            raise ValueError(f"unknown reference statistics kind {d.get('kind')!r}")
        mean = np.asarray(d["mean"], dtype=np.float64)
        precision = np.asarray(d["precision"], dtype=np.float64)
        if mean.shape != (2 * int(d["n_chunks"]),) or precision.shape != mean.shape * 2:
            raise ValueError("reference statistics: mean/precision shapes do not match n_chunks")
        return cls(int(d["n_chunks"]), mean, precision, float(d["threshold_d2"]),
                   int(d["n_cubes"]), str(d.get("source", "")))
