"""Saliency for a lightcone regressor: which voxels of a 21cm cube drove a parameter estimate.

A version whose manifest has a ``saliency`` entry ships ``saliency.onnx`` (lightcone, target
[2P] → ∂(target · (mean, σ))/∂lightcone plus the outputs it explains; built by
``training/lightcone/export_saliency.py``). The methods are the spectrum ones
(:mod:`.saliency`: the same row expansion and combination, over a cube instead of a spectrum):
SmoothGrad noise is added to every voxel, σ = sigma · (p99 − p1 of the cube); integrated
gradients start from ``zeros`` (no 21cm signal) or ``sky_mean`` (each frequency channel's sky
mean: the global signal kept, every fluctuation removed).

Scheduling as for spectra: an own :class:`DynamicBatcher` (own bound, ``endpoint="saliency"``
metrics) whose worker yields while the model's inference queue holds rows, so inference is
never starved; batches are a few rows (``SPECULA_LIGHTCONE_SALIENCY_MAX_BATCH_ROWS``), because
each gradient row keeps several full-size activation cubes alive inside ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.metrics import Stats

from .batcher import DynamicBatcher
from .pipeline import check_deadline
from .repository import ModelVersion
from .runner import OnnxRunner
from .saliency import (
    ENDPOINT,
    MethodParams,
    SaliencyError,
    check_saliency_graph,
    combine,
    completeness,
    expand_rows,
    open_graph,
    run_rows,
    setting_default,
    stats_as,
    yield_to,
)

BASELINES = ("zeros", "sky_mean")
MAX_ROWS_PER_CUBE = 64  # samples or steps: a cube row is ~100x a spectrum row
Item = tuple[np.ndarray, np.ndarray | None]  # (x (1, X, Y, L), weights (2P) or None = forward)


@dataclass(frozen=True)
class LightconeTarget:
    """What is explained: the mean (or σ) of one parameter, in its physical units."""

    name: str
    index: int
    sigma: bool

    @property
    def label(self) -> str:
        return f"{self.name}:sigma" if self.sigma else self.name


def robust_range(x: np.ndarray) -> float:
    """p99 − p1 over the whole cube (a few hot voxels do not set the noise)."""
    lo, hi = np.percentile(x, [1, 99])
    return float(hi - lo) if hi > lo else 1.0


def baseline_of(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "sky_mean":  # x is (1, X, Y, L): keep each channel's mean, drop the structure
        return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape).astype(np.float32)
    return np.zeros_like(x)


def check_params(p: MethodParams) -> None:
    p.check()
    if p.rows > MAX_ROWS_PER_CUBE:
        raise SaliencyError("bad_request", f"samples/steps must be ≤ {MAX_ROWS_PER_CUBE} "
                       "for a lightcone")
    if p.method == "integrated_gradients" and p.baseline not in BASELINES:
        raise SaliencyError("bad_request", f"baseline must be one of {BASELINES}")


class LightconeSaliency:
    """The saliency steps of one lightcone-regressor version."""

    def __init__(self, model: ModelVersion, saliency: OnnxRunner, forward: OnnxRunner,
                 inference_queue: DynamicBatcher, *, on_stats: Callable[[Stats], None],
                 max_batch_rows: int | None = None, max_queue_rows: int | None = None,
                 max_queue_delay_s: float = 0.002) -> None:
        self.model = model
        self.saliency_runner, self.forward_runner = saliency, forward
        self.inference_queue = inference_queue
        self.params: list[dict[str, Any]] = list(getattr(model.manifest, "parameters", []) or [])
        self.names = [p["name"] for p in self.params]
        labels = (model.name, str(model.version))
        self.batcher: DynamicBatcher[Item, dict[str, np.ndarray]] = DynamicBatcher(
            self.predict,
            max_batch_size=max_batch_rows or setting_default("lightcone_saliency_max_batch_rows"),
            max_queue_delay_s=max_queue_delay_s,
            max_queue_rows=max_queue_rows or setting_default("saliency_max_queue_rows"),
            labels=labels, on_stats=stats_as(ENDPOINT, on_stats))

    # ---- targets ----------------------------------------------------------------------------
    def default_target(self) -> str:
        return "HII_EFF_FACTOR" if "HII_EFF_FACTOR" in self.names else self.names[0]

    def parse_target(self, target: str | None) -> LightconeTarget:
        raw = target or self.default_target()
        name, _, what = raw.partition(":")
        if name not in self.names or what not in ("", "mean", "sigma"):
            raise SaliencyError("bad_target", f"target {raw!r}: use a parameter name "
                           f"{self.names}, optionally with ':sigma'")
        return LightconeTarget(name, self.names.index(name), what == "sigma")

    def weights(self, t: LightconeTarget) -> np.ndarray:
        w = np.zeros(2 * len(self.names), dtype=np.float32)
        w[t.index + len(self.names) * t.sigma] = 1.0
        return w

    @staticmethod
    def value(row: dict[str, np.ndarray], t: LightconeTarget) -> float:
        return float(row["theta_sigma" if t.sigma else "theta_mean"][t.index])

    # ---- the batcher's function (worker thread) --------------------------------------------
    def predict(self, items: list[Item]) -> list[dict[str, np.ndarray]]:
        """Forward rows through model.onnx, gradient rows through saliency.onnx, after
        letting the inference queue drain (bounded wait)."""
        yield_to(self.inference_queue)
        return run_rows(items, self.forward_runner, self.saliency_runner, "lightcone")

    # ---- one cube ---------------------------------------------------------------------------
    async def explain(self, x: np.ndarray, t: LightconeTarget, p: MethodParams,
                      deadline: float | None) -> dict[str, Any]:
        """The map (X, Y, L), the outputs of the clean cube and what was explained.
        ``x`` is one model input (1, X, Y, L)."""
        check_deadline(deadline, "saliency")
        self.batcher.check_room(p.rows + 2)
        std = p.sigma * robust_range(x) if p.method == "smoothgrad" else 0.0
        base = baseline_of(x, p.baseline) if p.method == "integrated_gradients" else None
        rows, base = expand_rows(x, p, noise_std=std, noisy=None, base=base)
        w = self.weights(t)
        items: list[Item] = [(x, None), *((r, w) for r in rows)]
        if base is not None:
            items.append((base, None))  # f(x₀) for the completeness check
        res = await self.batcher.submit(items, deadline)
        del rows
        grads = np.stack([r["saliency"] for r in res[1:1 + p.rows]])
        g = combine(x, grads, p, base)[0]
        clean = res[0]
        explained = self.value(clean, t)
        info: dict[str, Any] = {}
        if p.method == "integrated_gradients":
            f_base = self.value(res[-1], t)
            info = {"baseline": p.baseline, "steps": p.steps, "baseline_value": f_base,
                    "sum": float(g.sum()), "completeness_gap": completeness(g, explained, f_base)}
        elif p.method == "smoothgrad":
            info = {"samples": p.samples, "sigma": p.sigma, "noise_std": std, "seed": p.seed}
        unit = self.params[t.index].get("unit", "")
        return {"map": g.astype(np.float32), "outputs": clean,
                "explained": {"target": t.label, "parameter": t.name,
                              "output": "sigma" if t.sigma else "mean", "value": explained,
                              "unit": unit},
                "method": {"name": p.method, **info}}

    async def close(self) -> None:
        await self.batcher.close()


def load_lightcone_saliency(model: ModelVersion, forward: OnnxRunner,
                            inference_queue: DynamicBatcher, *, device: str,
                            intra_op_threads: int, on_stats: Callable[[Stats], None],
                            max_batch_rows: int | None = None,
                            max_queue_rows: int | None = None
                            ) -> tuple[LightconeSaliency | None, str | None]:
    """The saliency steps of a version, or (None, why not). Never raises: a missing or broken
    gradient graph must not stop the regressor itself from being served."""
    # the gradient graph always runs on CPU: on an H200 (onnxruntime-gpu 1.31.1, TF32 off) its
    # CUDA session gave ~2 % of the voxels' gradients wrong by up to 100x, and two identical
    # smoothgrad requests different maps (bench/results/2026-11-26-gpu-h200.md). A map a
    # scientist cannot reproduce is worse than a slow one. ``device`` still places the
    # forward pass, which agreed with the CPU's.
    del device
    runner, why = open_graph(model, model.manifest.saliency, device="cpu",
                             intra_op_threads=intra_op_threads, check=check_contract)
    if runner is None:
        return None, why
    return LightconeSaliency(model, runner, forward, inference_queue, on_stats=on_stats,
                             max_batch_rows=max_batch_rows,
                             max_queue_rows=max_queue_rows), None


def check_contract(model: ModelVersion, runner: OnnxRunner) -> None:
    m = model.manifest
    n = len(getattr(m, "parameters", []) or [])
    shape = [d for d in m.inputs[0].shape[1:]]
    x = np.zeros((1, *shape), dtype=np.float32)
    t = np.zeros((1, 2 * n), dtype=np.float32)
    t[:, 0] = 1.0
    check_saliency_graph(runner, ["lightcone", "target"], x, t,
                         {"saliency": x.shape, "theta_mean": (1, n)})
