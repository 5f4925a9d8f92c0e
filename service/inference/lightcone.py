"""A lightcone's way through the service, as named steps (LitServe-style, like pipeline.py):

    decode_request → preprocess → batch → predict → unbatch → encode_response

The server loads and serves these versions as it does every kind (serving.py); what is
particular to the kind — its contract, how a version is built, its byte budget — is
kinds/lightcone.py. A cube is four orders of magnitude bigger than a spectrum, so its memory
bound (an in-flight byte budget, :class:`ByteBudget`) and its batch sizes are its own.

Memory: every upload reserves its size from a :class:`ByteBudget` *before* its body is read
(the budget covers the body, the decoded float32 cube and the model input, ~3× the cube), so
N parallel 100 MB uploads wait their turn instead of multiplying peak RSS by N.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.lightcones import (
    PREPROCESS_VERSIONS,
    Lightcone,
    LightconeError,
    LightconeGrid,
    Source,
    make_lightcone,
    preprocess_patches,
    read_lightcone,
)
from service.lightcones.preprocess import MAX_PATCHES_PER_AXIS, setup_warnings
from service.lightcones.statistics import TrainingReference
from service.metrics import PreprocessStats, Stats

from .batcher import DynamicBatcher
from .repository import ModelError, ModelRepository, ModelVersion
from .runner import OnnxRunner

KIND = "lightcone-regressor"
Row = tuple[dict[str, np.ndarray], int]
# working memory per upload ≈ body + its copy + float32 cube + resampled cube: the default
# byte budget holds this many uploads of SPECULA_MAX_FILE_BYTES
BUDGET_FILES = 4


# ---- the repository side ----------------------------------------------------------------------
def load_lightcone_model(repo: ModelRepository, name: str, version: int) -> ModelVersion:
    """Read, validate and checksum one lightcone-regressor version: the repository's ``load``,
    told the kind and the lightcone preprocessing versions this code runs."""
    return repo.load(name, version, kind=KIND, preprocess_versions=PREPROCESS_VERSIONS)


def reference_of(model: ModelVersion) -> TrainingReference | None:
    """The training set's statistics a version ships (``reference_statistics``), if any; a
    malformed one makes the version unservable rather than its warnings silently absent."""
    d = getattr(model.manifest, "reference_statistics", None)
    if d is None:
        return None
    try:
        return TrainingReference.from_json(d)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError("bad_manifest", f"{model.name} v{model.version}: "
                         f"reference_statistics: {exc}") from None


# ---- memory bound -----------------------------------------------------------------------------
class ByteBudget:
    """An async semaphore counted in bytes: ``async with budget.reserve(n)``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._cond = asyncio.Condition()

    def reserve(self, n: int) -> _Reservation:
        if n > self.total:
            raise LightconeError("too_large", f"request needs {n} bytes of working memory; "
                                 f"the lightcone budget is {self.total} "
                                 "(SPECULA_LIGHTCONE_MAX_BYTES)")
        return _Reservation(self, n)


class _Reservation:
    def __init__(self, budget: ByteBudget, n: int) -> None:
        self.budget, self.n = budget, n

    async def __aenter__(self) -> None:
        async with self.budget._cond:
            await self.budget._cond.wait_for(lambda: self.budget.used + self.n <= self.budget.total)
            self.budget.used += self.n

    async def __aexit__(self, *exc: object) -> None:
        async with self.budget._cond:
            self.budget.used -= self.n
            self.budget._cond.notify_all()


# ---- the request side ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Axes:
    """Line-of-sight axis and cell size a client sends with a bare cube (query parameters):
    slices linearly spaced in redshift (``z_first``→``z_last``) or in frequency."""

    z_first: float | None = None
    z_last: float | None = None
    nu_first_mhz: float | None = None
    nu_last_mhz: float | None = None
    cell_mpc: float | None = None

    def apply(self, lc: Lightcone, source: str) -> Lightcone:
        n = lc.shape[2]
        z, nu = lc.redshifts, None
        if self.z_first is not None and self.z_last is not None:
            z = np.linspace(self.z_first, self.z_last, n)
        elif self.nu_first_mhz is not None and self.nu_last_mhz is not None:
            z, nu = None, np.linspace(self.nu_first_mhz, self.nu_last_mhz, n)
        cell = self.cell_mpc if self.cell_mpc is not None else lc.cell_mpc
        if z is lc.redshifts and nu is None and cell == lc.cell_mpc:
            return lc
        return make_lightcone(lc.cube, z, cell, lc.meta, frequencies_mhz=nu, source=source)

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.z_first, self.nu_first_mhz, self.cell_mpc))


def check_declared_shape(shape: tuple[int, ...], grid: LightconeGrid, axes_given: bool,
                         max_cells: int, source: str) -> None:
    """Refuse a declared cube shape against the model *before* its bytes are read."""
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise LightconeError("bad_shape", f"a lightcone is (n_x, n_y, n_los); got {shape}",
                             source=source)
    if math.prod(shape) > max_cells:
        raise LightconeError("too_large", f"cube {shape} has {math.prod(shape)} cells > limit "
                             f"{max_cells}", source=source)
    target = (grid.n_xy, grid.n_xy, grid.n_los)
    if not axes_given and tuple(shape) != target:
        raise LightconeError("missing_axis", f"cube {tuple(shape)} is not on the model grid "
                             f"{target}; send its axes (z_first/z_last or nu_first_mhz/"
                             "nu_last_mhz, and cell_mpc) to have it resampled", source=source)


@dataclass(frozen=True)
class Decoded:
    x: np.ndarray  # (patches, 1, n_xy, n_xy, n_los) model input, one row per sky patch
    info: dict[str, Any]
    warnings: list[str]

    def first_patch(self) -> Decoded:
        """The first sky patch alone (what a saliency map explains), saying so."""
        if len(self.x) == 1:
            return self
        sky = {**self.info["sky"], "explained_patch": 0}
        at = ", ".join(f"{o[0]:g}" for o in sky["offsets_mpc"])
        said = (f"explained: the first of {len(self.x)} sky patches (at {at} Mpc); the "
                "estimate shown is that patch's")
        notes = [*self.info["notes"], said]
        return Decoded(self.x[:1], {**self.info, "sky": sky, "notes": notes}, self.warnings)


# the patches' answers disagree beyond their σ when the reduced χ² of the patch means about
# their average exceeds this (for 4–16 patches, a chance excess this big has p < 1e-3)
PATCH_CHI2_WARN = 4.0


def combine_patches(mean: np.ndarray, sigma: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch answers (k, P) → one Gaussian per parameter, plus the patches' reduced χ².

    The answer is the equal-weight mixture of the patch posteriors, summarised by its mean
    and σ (σ² = mean σ_i² + variance of the means). Deliberately no 1/√k: the patches share
    the model's systematic errors (a cube from another simulator setup is off the same way on
    every patch), so averaging them does not make the answer k times more certain."""
    m = mean.mean(axis=0)
    var = (sigma.astype(np.float64) ** 2).mean(axis=0) + mean.var(axis=0)
    k = len(mean)
    chi2 = (((mean - m) / sigma) ** 2).sum(axis=0) / (k - 1) if k > 1 else np.zeros_like(m)
    return m, np.sqrt(var), chi2


class LightconePipeline:
    """The named steps for one lightcone-regressor model version."""

    def __init__(self, model: ModelVersion, runner: OnnxRunner, *, pool: Executor,
                 max_file_bytes: int, on_stats: Callable[[Stats], None],
                 max_batch_size: int = 16, max_queue_delay_s: float = 0.005,
                 max_queue_rows: int = 256) -> None:
        m = model.manifest
        self.model, self.runner, self.pool = model, runner, pool
        self.max_file_bytes = max_file_bytes
        self.on_stats = on_stats
        self.grid = LightconeGrid.from_manifest(m.grid or {})
        self.input_name = m.inputs[0].name
        self.params: list[dict[str, Any]] = list(getattr(m, "parameters", []) or [])
        self.reference = reference_of(model)
        self.stat_labels = (model.name, str(model.version))
        self.batcher: DynamicBatcher[np.ndarray, Row] = DynamicBatcher(
            self.predict, max_batch_size=max_batch_size, max_queue_delay_s=max_queue_delay_s,
            max_queue_rows=max_queue_rows, labels=self.stat_labels, on_stats=on_stats)

    # 1. decode_request (worker pool)
    def decode_request(self, data: bytes, name: str, fmt: str | None, axes: Axes) -> Lightcone:
        source = Source(data, name=name, max_bytes=self.max_file_bytes)
        _, lc = read_lightcone(source, format=fmt)
        return axes.apply(lc, name)

    # 2. preprocess (worker pool)
    def preprocess(self, lc: Lightcone, name: str) -> Decoded:
        p = preprocess_patches(lc, self.grid, source=name,
                               version=self.model.manifest.preprocess_version)
        info = {"format": lc.meta.get("format"), "shape": list(lc.shape), "notes": p.notes,
                "sky": p.sky.to_json()}
        if lc.params:  # a simulator file says what it was made with: echo it for comparison
            info["file_parameters"] = {q["name"]: lc.params[q["key"]] for q in self.params
                                       if q.get("key") in lc.params}
        warnings = setup_warnings(lc, self.grid, p.x)
        if self.reference is not None:
            dist = self.reference.distances(p.x)  # one per sky patch
            mid = sorted(dist, key=lambda d: d.score)[len(dist) // 2]  # the median patch
            info["training_distance"] = {
                "score": mid.score, "nearest": mid.nearest, "d2": mid.d2,
                "threshold_d2": mid.threshold_d2, "patches_score": [d.score for d in dist],
                "outside": mid.score > 1.0}
            if mid.score > 1.0:
                warnings.append(
                    f"the cube's statistics (fluctuation amplitude and sky-scale slope per "
                    f"redshift chunk) lie outside the training set's: d² = {mid.d2:.3g} from "
                    f"the nearest kind of training input ({mid.nearest}), where 99 % of those "
                    f"lie below {mid.threshold_d2:.3g}; treat the estimates with caution")
        return Decoded(p.x, info, warnings)

    def decode_and_preprocess(self, data: bytes, name: str, fmt: str | None, axes: Axes
                              ) -> Decoded:
        return self.preprocess(self.decode_request(data, name, fmt, axes), name)

    def cube_and_preprocess(self, cube: np.ndarray, name: str, axes: Axes) -> Decoded:
        return self.preprocess(axes.apply(make_lightcone(cube, source=name), name), name)

    # 3. batch / 4. predict / 5. unbatch
    def predict(self, rows: list[np.ndarray]) -> list[Row]:
        outputs = self.runner.run({self.input_name: np.stack(rows)})
        return [(outputs, i) for i in range(len(rows))]

    async def infer(self, x: np.ndarray, deadline: float | None = None) -> dict[str, np.ndarray]:
        rows = await self.batcher.submit(list(x), deadline)
        names = rows[0][0].keys()
        return {k: np.stack([o[k][i] for o, i in rows]) for k in names}

    @property
    def patch_bytes(self) -> int:
        """Model input of the most sky patches one cube can become (reserved with its body)."""
        return MAX_PATCHES_PER_AXIS ** 2 * math.prod(self.grid.shape) * 4

    # 6. encode_response
    def encode_response(self, decoded: Decoded, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """One answer per cube: the sky patches' answers combined (:func:`combine_patches`)."""
        mean, sigma, chi2 = combine_patches(outputs["theta_mean"], outputs["theta_sigma"])
        many = len(outputs["theta_mean"]) > 1
        params, warnings = {}, list(decoded.warnings)
        for k, p in enumerate(self.params):
            params[p["name"]] = {"mean": float(mean[k]), "sigma": float(sigma[k]),
                                 "unit": p.get("unit", ""), "prior": [p["low"], p["high"]],
                                 "description": p.get("description", "")}
            if many:
                params[p["name"]]["patch_means"] = [float(v) for v in outputs["theta_mean"][:, k]]
                params[p["name"]]["patch_chi2"] = float(chi2[k])
            if not p["low"] <= mean[k] <= p["high"]:  # the head is linear, not clipped
                warnings.append(f"{p['name']} = {float(mean[k]):.4g} lies outside its training "
                                f"prior [{p['low']:g}, {p['high']:g}]: the cube is probably "
                                "out of distribution")
            if chi2[k] > PATCH_CHI2_WARN:
                warnings.append(f"the sky patches disagree on {p['name']} (reduced χ² "
                                f"{float(chi2[k]):.1f} of their means about the average): the "
                                "cube is unlike the training set or its sky is not homogeneous")
        name, version = self.stat_labels
        return {"model": name, "version": int(version), "parameters": params,
                "warnings": warnings, **decoded.info}

    async def run_decode(self, fn, *args) -> Decoded:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            return await loop.run_in_executor(self.pool, fn, *args)
        finally:
            self.on_stats(PreprocessStats(*self.stat_labels,
                                          seconds=time.perf_counter() - t0))
