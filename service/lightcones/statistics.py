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
the mean of the training inputs', with their covariance shrunk a little toward its diagonal (a
hundred cubes estimate 16 × 16 numbers). The threshold is not a χ² quantile but the training
inputs' own: the 99th percentile of d² of each training simulation left out of the fit, so 1 %
of cubes like the training set's are flagged, whatever the statistics' distribution. Inputs of
different kinds (noisy observations, noiseless simulations) are separate components, each with
its own mean, covariance and threshold, and a cube is judged against the nearest one: one
Gaussian over both would be so wide that it would flag nothing.
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
class Component:
    """One kind of training input (say, noisy observations, or noiseless simulations): the
    mean and precision of its statistics and its own leave-one-out d² threshold."""

    name: str
    mean: np.ndarray
    precision: np.ndarray
    threshold_d2: float
    n_rows: int

    @classmethod
    def fit(cls, name: str, stats: np.ndarray, groups: np.ndarray | None = None) -> Component:
        """``groups`` names the simulation behind each row: rows that are noise draws of one
        simulation are left out together, so that a cube is never judged against its own
        signal."""
        n = len(stats)
        groups = np.arange(n) if groups is None else np.asarray(groups)
        loo = np.empty(n)
        for i in range(n):
            loo[i] = _d2(stats[i], *_fit(stats[groups != groups[i]]))
        mean, precision = _fit(stats)
        return cls(name, mean, precision, float(np.quantile(loo, QUANTILE)), n)

    def d2(self, stats: np.ndarray) -> np.ndarray:
        return _d2(stats, self.mean, self.precision)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean.tolist(),
                "precision": self.precision.tolist(), "threshold_d2": self.threshold_d2,
                "n_rows": self.n_rows}

    @classmethod
    def from_json(cls, d: dict[str, Any], n_stats: int) -> Component:
        mean = np.asarray(d["mean"], dtype=np.float64)
        precision = np.asarray(d["precision"], dtype=np.float64)
        if mean.shape != (n_stats,) or precision.shape != (n_stats, n_stats):
            raise ValueError(f"component {d.get('name')!r}: mean/precision shapes do not match "
                             f"{n_stats} statistics")
        return cls(str(d["name"]), mean, precision, float(d["threshold_d2"]), int(d["n_rows"]))


@dataclass(frozen=True)
class Distance:
    """Where a cube's statistics lie: d² to the nearest component, in units of its threshold
    (``score`` ≤ 1: like 99 % of that kind of training input)."""

    score: float
    nearest: str
    d2: float
    threshold_d2: float


@dataclass(frozen=True)
class TrainingReference:
    """The training inputs' statistics, summarised: what a served version carries in its
    manifest (``reference_statistics``) to say how unusual a cube is. One component per kind
    of input the model was trained or validated on; a cube is judged against the nearest."""

    n_chunks: int
    components: tuple[Component, ...]
    n_cubes: int
    source: str = ""

    def distances(self, x: np.ndarray) -> list[Distance]:
        """One :class:`Distance` per model input (n, 1, n_x, n_y, n_los)."""
        stats = summary_statistics(x, self.n_chunks)
        d2 = np.stack([c.d2(stats) for c in self.components], axis=-1)  # (n, components)
        ratio = d2 / np.array([c.threshold_d2 for c in self.components])
        best = ratio.argmin(axis=-1)
        return [Distance(float(ratio[i, k]), self.components[k].name, float(d2[i, k]),
                         self.components[k].threshold_d2) for i, k in enumerate(best)]

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "n_chunks": self.n_chunks, "quantile": QUANTILE,
                "components": [c.to_json() for c in self.components],
                "n_cubes": self.n_cubes, "source": self.source}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainingReference:
        if d.get("kind") != KIND:
            raise ValueError(f"unknown reference statistics kind {d.get('kind')!r}")
        n_chunks = int(d["n_chunks"])
        comps = tuple(Component.from_json(c, 2 * n_chunks) for c in d["components"])
        if not comps:
            raise ValueError("reference statistics without a component")
        return cls(n_chunks, comps, int(d["n_cubes"]), str(d.get("source", "")))
