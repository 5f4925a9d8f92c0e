"""Saliency and introspection on the serving runtime: every method is a batch of one graph.

A model version whose manifest has a ``saliency`` entry ships ``saliency.onnx`` (spectrum,
target → ∂(target · outputs)/∂spectrum plus the outputs it explains) and ``introspect.onnx``
(first-layer filters, per-stage activations); contract in models/README.md, graph design in
docs/saliency.md. No PyTorch here: ONNX Runtime only, like inference.

One request's way (after :mod:`.pipeline`):
    decode_request → preprocess → predict the clean spectrum (model.onnx; resolves ``top``)
    → expand rows for the method → batch → gradient graph → reduce rows → encode_response

Methods, for a spectrum x and the explained scalar s(x) = target · (probs, z):
- ``gradient``: ∂s/∂x (1 row);
- ``gradient_x_input``: x ⊙ ∂s/∂x (1 row);
- ``smoothgrad``: mean of ∂s/∂x over n copies of x with Gaussian noise on the flux channel,
  σ = sigma · (p99 − p1 of the good flux pixels) — a robust range, so one clipped cosmic ray
  does not set the noise (n rows; defaults n = 5, sigma = 0.2, as in the tutorial);
- ``integrated_gradients``: (x − x₀) ⊙ mean_k ∂s/∂x at x₀ + (k+½)/m·(x − x₀), k < m
  (midpoint rule, m rows; baseline x₀ = zeros: no flux, no weight); the response reports the
  completeness gap |Σ IG − (s(x) − s(x₀))| / |s(x) − s(x₀)|, which shrinks as m grows.
Scales: ``probability`` (∂p), ``log_probability`` (∂p / p) and ``logit`` (∂p / (p(1−p))),
exact rescalings of the probability gradient row by row; the redshift target has ``value``.

Targets: a label, a top class, ``top`` (the predicted class), ``redshift``, or ``auto`` (the
default, :func:`auto_target`): the decision that is still open. A class at P ≥ 0.99 is
saturated — its gradient is ~0 and the map shows noise — so ``auto`` then explains the next
decision down: the subtype when the class has subtypes, else the redshift.

Scheduling: saliency has its *own* :class:`DynamicBatcher` (own queue, own bound, own metrics
label ``endpoint="saliency"``), so classification rows never queue behind gradient rows, and
before each saliency batch the worker yields while the model's classification queue holds
rows (up to ``YIELD_MAX_S`` per batch, so saliency slows under classification load but is
never starved forever). Saliency batches are small, bounding how long a
classification batch can share the CPU with one. Both bounds are settings
(``SPECULA_SALIENCY_MAX_BATCH_ROWS``, ``SPECULA_SALIENCY_MAX_QUEUE_ROWS``). Introspection
(activations, filters) is batched the same way through a second queue of its own
(``endpoint="introspect"``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service.metrics import Stats
from service.settings import Settings
from service.spectra import SpectrumError

from .batcher import DynamicBatcher
from .pipeline import SpectrumPipeline, Upload, check_deadline
from .postprocess import LabelMap, summarise
from .repository import ModelError, ModelVersion, read_verified
from .runner import OnnxRunner

log = logging.getLogger("specula.saliency")

Method = Literal["gradient", "gradient_x_input", "smoothgrad", "integrated_gradients"]
Scale = Literal["probability", "log_probability", "logit", "value"]
METHODS: tuple[str, ...] = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients")
SCALES: tuple[str, ...] = ("probability", "log_probability", "logit", "value")
MAX_ROWS_PER_SPECTRUM = 256  # samples or steps
YIELD_MAX_S = 0.25
SATURATED = 0.99  # a class probability at or above this leaves nothing to explain
AUTO_TARGET_DOC = (
    f"if the predicted class has P < {SATURATED:g}, that class (as `top`); if it is saturated "
    f"(P ≥ {SATURATED:g}), the decision left open: the best subtype label when the class has "
    "subtypes (a star → e.g. STAR:A), otherwise the redshift (a galaxy or QSO → `redshift`).")
ENDPOINT = "saliency"
INTROSPECT = "introspect"


class SaliencyError(Exception):
    """A saliency request that cannot be served, with a stable ``code``: ``bad_request``,
    ``bad_target``, ``bad_layer``, ``too_many_spectra``, ``introspection_unavailable``. The
    API maps a code to its HTTP status (service/api/errors.py); inference knows no HTTP."""

    def __init__(self, code: str, detail: str) -> None:
        self.code, self.detail = code, detail
        super().__init__(detail)


@dataclass(frozen=True)
class MethodParams:
    method: Method = "gradient"
    samples: int = 5  # smoothgrad n
    sigma: float = 0.2  # smoothgrad σ as a fraction of the flux channel's robust range
    steps: int = 32  # integrated gradients m
    baseline: Literal["zeros", "continuum"] = "zeros"
    seed: int = 0

    def check(self) -> None:
        if self.method not in METHODS:
            raise SaliencyError("bad_request", f"method must be one of {METHODS}")
        if not 1 <= self.samples <= MAX_ROWS_PER_SPECTRUM:
            raise SaliencyError("bad_request", f"samples must be 1..{MAX_ROWS_PER_SPECTRUM}")
        if not 1 <= self.steps <= MAX_ROWS_PER_SPECTRUM:
            raise SaliencyError("bad_request", f"steps must be 1..{MAX_ROWS_PER_SPECTRUM}")
        if not 0.0 <= self.sigma <= 5.0:
            raise SaliencyError("bad_request", "sigma must be in [0, 5]")

    @property
    def rows(self) -> int:
        return {"smoothgrad": self.samples, "integrated_gradients": self.steps}.get(
            self.method, 1)


@dataclass(frozen=True)
class Target:
    """What is explained: ``weights`` (K+1) on (probs, z), resolved per spectrum."""

    name: str  # as asked: a label, a top class, "top", "auto" or "redshift"
    kind: Literal["label", "class", "top", "auto", "redshift"]
    scale: Scale


def auto_target(probs: np.ndarray, labels: LabelMap) -> tuple[Literal["label", "class",
                                                                      "redshift"], str]:
    """(kind, name) of what ``auto`` explains for one spectrum's label probabilities: the
    predicted class while it is uncertain (P < SATURATED); once it is saturated, its best
    subtype label if the class has several labels, else the redshift."""
    top = np.asarray(probs, dtype=np.float64) @ labels.membership
    c = int(top.argmax())
    if top[c] < SATURATED:
        return "class", labels.top_classes[c]
    inside = labels.membership[:, c] > 0
    if int(inside.sum()) > 1:
        return "label", labels.labels[int(np.where(inside, probs, -1.0).argmax())]
    return "redshift", "redshift"


def setting_default(name: str) -> Any:
    """A Settings field's default: one place for it, also when built without Settings."""
    return Settings.model_fields[name].default


def stats_as(endpoint: str, on_stats: Callable[[Stats], None]) -> Callable[[Stats], None]:
    def record(stats: Stats) -> None:
        on_stats(dataclasses.replace(stats, endpoint=endpoint)
                 if hasattr(stats, "endpoint") else stats)
    return record


def yield_to(queue: DynamicBatcher) -> None:
    """Wait (worker thread) while the inference ``queue`` holds rows, at most YIELD_MAX_S:
    explanation slows under inference load but is never starved for ever."""
    end = time.monotonic() + YIELD_MAX_S
    while queue.depth > 0 and time.monotonic() < end:
        time.sleep(0.002)


def run_rows(items: list[tuple[np.ndarray, np.ndarray | None]], forward: OnnxRunner,
             gradient: OnnxRunner, input_name: str) -> list[dict[str, np.ndarray]]:
    """One saliency batch: rows with weights None through the model (forward outputs), the
    others through the gradient graph with their ``target`` weights; per-row dicts, in
    order."""
    out: list[dict[str, np.ndarray] | None] = [None] * len(items)
    fwd = [i for i, (_, w) in enumerate(items) if w is None]
    grad = [i for i, (_, w) in enumerate(items) if w is not None]
    if fwd:
        o = forward.run({input_name: np.stack([items[i][0] for i in fwd])})
        for j, i in enumerate(fwd):
            out[i] = {k: v[j] for k, v in o.items()}
    if grad:
        o = gradient.run({input_name: np.stack([items[i][0] for i in grad]),
                          "target": np.stack([items[i][1] for i in grad]).astype(np.float32)})
        for j, i in enumerate(grad):
            out[i] = {k: v[j] for k, v in o.items()}
    return out  # type: ignore[return-value]


def open_graph(model: ModelVersion, entry: dict[str, Any] | None, *, device: str,
               intra_op_threads: int, check: Callable[[ModelVersion, OnnxRunner], None],
               warm_rows: int = 0) -> tuple[OnnxRunner | None, str | None]:
    """A verified, contract-checked saliency graph, or (None, why not). Never raises: a
    missing or broken gradient graph must not stop the model itself from being served. A
    missing ``entry`` (the manifest names no saliency graph) is answered here too, so every
    kind's loader says it in the same words."""
    if not entry:
        return None, f"{model.name} v{model.version} ships no saliency graph (saliency.onnx)"
    try:
        runner = OnnxRunner(read_verified(model, entry), device=device,  # type: ignore[arg-type]
                            intra_op_threads=intra_op_threads, warm_rows=warm_rows)
        check(model, runner)
    except ModelError as exc:
        log.error("saliency graph not served", extra={"model": model.name,
                                                       "version": model.version,
                                                       "code": exc.code, "detail": exc.detail})
        return None, f"[{exc.code}] {exc.detail}"
    except Exception as exc:  # noqa: BLE001 — ORT cannot parse it: same answer, not a crash
        return None, f"[bad_model] saliency graph of {model.name} v{model.version}: {exc}"
    return runner, None


def robust_range(x: np.ndarray) -> float:
    """p99 − p1 of the flux channel over pixels with weight > 0 (all pixels if none)."""
    flux, good = x[0], x[1] > 0
    vals = flux[good] if good.sum() >= 16 else flux
    lo, hi = np.percentile(vals, [1, 99])
    return float(hi - lo) if hi > lo else 1.0


def expand(x: np.ndarray, p: MethodParams) -> tuple[np.ndarray, np.ndarray | None]:
    """The gradient rows of one spectrum (rows, 2, npix), and the IG baseline if any: noise
    on the flux channel only, scaled by its robust range."""
    std = p.sigma * robust_range(x) if p.method == "smoothgrad" else 0.0
    base = baseline_of(x, p.baseline) if p.method == "integrated_gradients" else None
    return expand_rows(x, p, noise_std=std, noisy=0, base=base)


def expand_rows(x: np.ndarray, p: MethodParams, *, noise_std: float, noisy: int | None,
                base: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The gradient rows of one input of any shape: ``samples`` noisy copies (Gaussian noise
    of ``noise_std`` on ``x[noisy]``, or on all of ``x`` when ``noisy`` is None), ``steps``
    points of the straight path from ``base`` to ``x``, or ``x`` itself. Shared by every model
    kind, so a method means the same thing for a spectrum and a lightcone."""
    if p.method == "smoothgrad":
        rng = np.random.default_rng(p.seed)
        rows = np.repeat(x[None], p.samples, axis=0)
        sel = (slice(None),) if noisy is None else (slice(None), noisy)
        rows[sel] += rng.normal(0.0, noise_std, size=rows[sel].shape).astype(np.float32)
        return rows, None
    if p.method == "integrated_gradients":
        assert base is not None
        alphas = ((np.arange(p.steps) + 0.5) / p.steps).astype(np.float32)
        return base[None] + alphas.reshape(-1, *[1] * x.ndim) * (x - base)[None], base
    return x[None].copy(), None


def combine(x: np.ndarray, grads: np.ndarray, p: MethodParams,
            base: np.ndarray | None) -> np.ndarray:
    """The map from the gradient rows: their mean, times the input (gradient × input) or
    times the path (x − x₀) (integrated gradients)."""
    g = grads.mean(axis=0)
    if p.method == "gradient_x_input":
        return g * x
    if p.method == "integrated_gradients":
        return g * (x - base)
    return g


def completeness(g: np.ndarray, f_x: float, f_base: float) -> float:
    """|Σ IG − (f(x) − f(x₀))| / |f(x) − f(x₀)|: how far the m-step sum is from exact."""
    delta = f_x - f_base
    return float(abs(float(g.sum()) - delta) / max(abs(delta), 1e-12))


def baseline_of(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "continuum":  # the median flux everywhere, same weights: "no features"
        b = x.copy()
        good = x[1] > 0
        b[0] = np.median(x[0][good]) if good.any() else 0.0
        return b
    return np.zeros_like(x)


def rescale(grad: np.ndarray, value: np.ndarray, scale: Scale) -> np.ndarray:
    """Probability gradient rows → log-probability or log-odds gradients (exact)."""
    v = np.clip(value.astype(np.float64), 1e-30, None)[:, None, None]
    if scale == "log_probability":
        return (grad / v).astype(np.float32)
    if scale == "logit":
        return (grad / (v * np.clip(1.0 - v, 1e-30, None))).astype(np.float32)
    return grad


Item = tuple[np.ndarray, np.ndarray | None]  # (x (2, npix), weights (K+1) or None = forward)


class SaliencyPipeline:
    """The saliency and introspection steps for one model version."""

    def __init__(self, model: ModelVersion, spectra: SpectrumPipeline, saliency: OnnxRunner,
                 forward: OnnxRunner, introspect: OnnxRunner | None, *,
                 on_stats: Callable[[Stats], None], max_queue_delay_s: float = 0.002,
                 max_batch_rows: int | None = None, max_queue_rows: int | None = None) -> None:
        self.model = model
        self.spectra = spectra  # decode/preprocess, the label map and the classify batcher
        self.saliency_runner = saliency
        self.forward_runner = forward
        self.introspect_runner = introspect
        self.entry: dict[str, Any] = dict(model.manifest.saliency or {})
        self.labels = spectra.labels
        self.n_labels = len(self.labels.labels)
        self.grid = spectra.grid
        self.layers = [lay["name"] for lay in self.entry.get("introspect", {}).get("layers", [])]
        rows = max_batch_rows or setting_default("saliency_max_batch_rows")
        queue = max_queue_rows or setting_default("saliency_max_queue_rows")
        self.batcher: DynamicBatcher[Item, dict[str, Any]] = DynamicBatcher(
            self.predict, max_batch_size=rows, max_queue_delay_s=max_queue_delay_s,
            max_queue_rows=queue, labels=spectra.stat_labels,
            on_stats=stats_as(ENDPOINT, on_stats))
        # introspection: its own queue too (own label), batched like saliency
        self.introspect_batcher: DynamicBatcher[np.ndarray, dict[str, np.ndarray]] = \
            DynamicBatcher(self.predict_introspect, max_batch_size=rows,
                           max_queue_delay_s=max_queue_delay_s, max_queue_rows=queue,
                           labels=spectra.stat_labels, on_stats=stats_as(INTROSPECT, on_stats))

    # ---- targets --------------------------------------------------------------------------
    def parse_target(self, target: str, scale: str | None) -> Target:
        if target in ("redshift", "z"):
            if scale not in (None, "value"):
                raise SaliencyError("bad_request", "the redshift target has scale 'value'")
            return Target("redshift", "redshift", "value")
        scale = scale or "probability"
        if scale not in SCALES or scale == "value":
            raise SaliencyError("bad_request", "scale must be probability, "
                           "log_probability or logit for a class target")
        if target in ("top", "auto"):
            return Target(target, target, scale)  # type: ignore[arg-type]
        if target in self.labels.labels:
            return Target(target, "label", scale)  # type: ignore[arg-type]
        if target in self.labels.top_classes:
            return Target(target, "class", scale)  # type: ignore[arg-type]
        raise SaliencyError("bad_target", f"target {target!r} is none of the labels "
                       f"{self.labels.labels}, top classes {self.labels.top_classes}, "
                       "'top', 'auto' or 'redshift'")

    def resolve(self, target: Target, probs: np.ndarray) -> Target:
        """The concrete target (a label, a class or the redshift) for one spectrum: ``top`` →
        its predicted class, ``auto`` → :func:`auto_target`; others as asked."""
        if target.kind == "top":
            top = self.labels.top_classes[int((probs @ self.labels.membership).argmax())]
            return Target(top, "class", target.scale)
        if target.kind == "auto":
            kind, name = auto_target(probs, self.labels)
            return Target(name, kind, "value" if kind == "redshift" else target.scale)
        return target

    def weights(self, target: Target) -> np.ndarray:
        """(K+1) weights on (probs, z) of a resolved target."""
        w = np.zeros(self.n_labels + 1, dtype=np.float32)
        if target.kind == "redshift":
            w[-1] = 1.0
        elif target.kind == "label":
            w[self.labels.labels.index(target.name)] = 1.0
        else:
            w[:-1] = self.labels.membership[:, self.labels.top_classes.index(target.name)]
        return w

    # ---- the batcher's function (worker thread) ------------------------------------------
    def predict(self, items: list[Item]) -> list[dict[str, Any]]:
        """Forward rows (weights None) through model.onnx, gradient rows through saliency.onnx;
        one dict of per-row arrays per item, in order. Yields to classification first."""
        self._yield_to_classification()
        return run_rows(items, self.forward_runner, self.saliency_runner, "spectrum")

    def _yield_to_classification(self) -> None:
        yield_to(self.spectra.batcher)

    # ---- one spectrum --------------------------------------------------------------------
    async def explain(self, x: np.ndarray, target: Target, params: MethodParams,
                      deadline: float | None) -> dict[str, Any]:
        """The map (2, npix), the prediction of the clean spectrum and what was explained."""
        check_deadline(deadline, "saliency")
        clean = (await self.batcher.submit([(x, None)], deadline))[0]
        prediction = summarise({k: np.asarray(v)[None] for k, v in clean.items()},
                               self.labels)[0]
        asked, target = target, self.resolve(target, clean["probs"])
        w = self.weights(target)
        rows, base = expand(x, params)
        items: list[Item] = [(r, w) for r in rows]
        if base is not None:
            items.append((base, None))  # s(x₀) for the completeness check: a forward row
        res = await self.batcher.submit(items, deadline)
        grads = np.stack([r["saliency"] for r in res[:len(rows)]])
        values = np.array([self._value(r, w) for r in res])
        if target.kind != "redshift":
            grads = rescale(grads, values[:len(rows)], target.scale)
        g = combine(x, grads, params, base)
        explained = self._value(clean, w)
        info: dict[str, Any] = {}
        if params.method == "integrated_gradients":
            f_base = values[-1]
            if target.scale != "probability" and target.kind != "redshift":
                f_base, f_x = _scaled(f_base, target.scale), _scaled(explained, target.scale)
            else:
                f_x = explained
            info = {"baseline": params.baseline, "steps": params.steps,
                    "baseline_value": float(f_base), "sum": float(g.sum()),
                    "completeness_gap": completeness(g, f_x, f_base)}
        elif params.method == "smoothgrad":
            info = {"samples": params.samples, "sigma": params.sigma,
                    "noise_std": params.sigma * robust_range(x), "seed": params.seed}
        return {"map": g.astype(np.float32), "prediction": prediction,
                "explained": {"target": target.name, "asked": asked.name,
                              "scale": target.scale, "value": float(explained)},
                "method": {"name": params.method, **info}}

    def _value(self, row: dict[str, Any], w: np.ndarray) -> float:
        return float(np.dot(w[:-1], row["probs"]) + w[-1] * float(row["z"]))

    # ---- a whole request -----------------------------------------------------------------
    async def explain_upload(self, uploads: list[Upload], target: Target, params: MethodParams,
                             deadline: float | None, max_spectra: int,
                             index: int | None = None) -> list[dict[str, Any]]:
        """decode → preprocess → explain each spectrum (or only the ``index``-th of the
        request, counting across files); per-spectrum errors in place."""
        loop = asyncio.get_running_loop()
        self.batcher.check_room(params.rows + 2)
        pairs = []
        for up in uploads:
            spectra = await loop.run_in_executor(self.spectra.pool, self.spectra.decode_request,
                                                 up)
            pairs += [(up, s) for s in spectra]
        if index is not None:
            if not 0 <= index < len(pairs):
                raise SaliencyError("bad_request", f"index {index} out of range: the "
                               f"request holds {len(pairs)} spectra")
            pairs = [pairs[index]]
        if len(pairs) > max_spectra:
            raise SaliencyError("too_many_spectra", f"{len(pairs)} spectra; saliency "
                           f"takes at most {max_spectra} per request (use ?index=)")
        prepared = await loop.run_in_executor(self.spectra.pool, self.spectra.preprocess,
                                              [s for _, s in pairs])
        jobs = [(up, s, p) for (up, s), p in zip(pairs, prepared)]

        async def one(up: Upload, s, p) -> dict[str, Any]:
            base = {"object_id": s.object_id, "source": up.name, "spectrum": s}
            if isinstance(p, SpectrumError):
                return {**base, "error": {**p.to_dict(), "source": up.name}}
            r = await self.explain(p.x, target, params, deadline)
            return {**base, **r, "prepared": p}

        results = list(await asyncio.gather(*(one(*j) for j in jobs)))
        if results and all("error" in r for r in results):
            first = results[0]["error"]
            raise SpectrumError(first["code"], first["detail"], source=results[0]["source"])
        return results

    # ---- introspection -------------------------------------------------------------------
    def predict_introspect(self, rows: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """The introspect batcher's function: every layer's activations per row, and the
        filters (the same for every row)."""
        assert self.introspect_runner is not None
        self._yield_to_classification()
        out = self.introspect_runner.run({"spectrum": np.stack(rows).astype(np.float32)})
        return [{k: (v if k == "filters" else v[i]) for k, v in out.items()}
                for i in range(len(rows))]

    def _check_introspection(self) -> None:
        if self.introspect_runner is None:
            raise SaliencyError("introspection_unavailable",
                           f"{self.model.name} v{self.model.version} ships no "
                           "introspect.onnx")

    async def filters(self, deadline: float | None = None) -> np.ndarray:
        """First-layer weights (members, channels, 2, k): an output of the graph, not a file."""
        self._check_introspection()
        x = np.zeros((2, self.grid.npix), dtype=np.float32)
        return (await self.introspect_batcher.submit([x], deadline))[0]["filters"]

    async def activations(self, x: np.ndarray, layer: str, deadline: float | None = None
                          ) -> dict[str, np.ndarray]:
        """One layer's activations (members, channels, length) for one preprocessed spectrum."""
        self._check_introspection()
        if layer not in self.layers:
            raise SaliencyError("bad_layer", f"layer must be one of {self.layers}")
        out = (await self.introspect_batcher.submit([x.astype(np.float32)], deadline))[0]
        return {"filters": out["filters"], "activations": out[layer]}

    async def close(self) -> None:
        await self.batcher.close()
        await self.introspect_batcher.close()


def _scaled(p: float, scale: str) -> float:
    p = min(max(p, 1e-30), 1 - 1e-7)
    return float(np.log(p)) if scale == "log_probability" else float(np.log(p / (1 - p)))


def load_saliency(model: ModelVersion, spectra: SpectrumPipeline, *, device: str,
                  intra_op_threads: int, on_stats: Callable[[Stats], None],
                  max_queue_delay_s: float = 0.002, max_batch_rows: int | None = None,
                  max_queue_rows: int | None = None
                  ) -> tuple[SaliencyPipeline | None, str | None]:
    """The saliency pipeline of a version, or (None, why not). Never raises: a missing or
    broken saliency graph must not stop the classifier from being served."""
    entry = model.manifest.saliency
    warm = max_batch_rows or 0  # CUDA only: see runner.OnnxRunner.warm_up
    sal, why = open_graph(model, entry, device=device, intra_op_threads=intra_op_threads,
                          check=check_saliency_contract, warm_rows=warm)
    intro = None
    if sal is not None and entry and entry.get("introspect"):
        intro, why = open_graph(model, entry["introspect"], device=device, intra_op_threads=1,
                                check=lambda m, r: None, warm_rows=warm)
    if sal is None or why:
        return None, why
    fwd = OnnxRunner(model.onnx, device=device,  # type: ignore[arg-type]
                     intra_op_threads=intra_op_threads, warm_rows=warm)
    return SaliencyPipeline(model, spectra, sal, fwd, intro, on_stats=on_stats,
                            max_queue_delay_s=max_queue_delay_s, max_batch_rows=max_batch_rows,
                            max_queue_rows=max_queue_rows), None


def check_saliency_contract(model: ModelVersion, runner: OnnxRunner) -> None:
    k = len(model.manifest.labels)
    npix = model.manifest.spectrum_grid().npix
    x = np.zeros((2, 2, npix), dtype=np.float32)
    t = np.zeros((2, k + 1), dtype=np.float32)
    t[:, 0] = 1.0
    check_saliency_graph(runner, ["spectrum", "target"], x, t,
                         {"saliency": x.shape, "probs": (2, k)})


def check_saliency_graph(runner: OnnxRunner, input_names: list[str], x: np.ndarray,
                         t: np.ndarray, expected_shapes: dict[str, tuple[int, ...]]) -> None:
    """The contract every saliency graph (spectra, lightcones) keeps: inputs ``input_names``
    (the model input, then ``target``), a ``saliency`` output, and on one warm-up run with
    ``x`` and ``t`` the outputs shaped as ``expected_shapes`` says (in the order the error
    names them). It runs at load so that a graph exported against another model is refused
    there, as ``contract_mismatch``, not on a scientist's first request; one check for both
    kinds keeps their refusals, and the codes a client sees, the same."""
    if runner.input_names != input_names or "saliency" not in runner.output_names:
        raise ModelError("contract_mismatch", f"saliency graph has inputs {runner.input_names} "
                         f"outputs {runner.output_names}")
    try:
        out = runner.run(dict(zip(input_names, (x, t), strict=True)))
    except Exception as exc:  # noqa: BLE001
        raise ModelError("contract_mismatch", f"saliency warm-up failed: {exc}") from None
    if any(out[name].shape != shape for name, shape in expected_shapes.items()):
        raise ModelError("contract_mismatch", "saliency graph returned "
                         + " / ".join(str(out[name].shape) for name in expected_shapes))
