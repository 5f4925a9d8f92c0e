"""Open Inference Protocol v2 model endpoints, for every model kind: metadata, readiness,
infer, and Triton's model configuration and statistics extensions.

One router answers every ``/v2/models`` route whatever the model's kind; what differs between
kinds comes from the served version itself (its manifest, and its kind's OIP parameters and
working-memory reservation, service/inference/kinds/). ``infer`` takes model-ready tensors
(``spectrum`` FP32 [N, 2, npix]; ``lightcone`` FP32 [N, 1, n_xy, n_xy, n_los]; already
preprocessed) and returns the raw output tensors; it shares the version's batcher with the
native /v1 endpoints, so OIP and native requests are batched together. The hot path
(service/api/hotpath.py) calls :func:`oip_infer` directly.

``config`` and ``stats`` are what tritonclient's ``get_model_config`` and
``get_inference_statistics`` ask for, in Triton's JSON shapes. Statistics are read from the
service's Prometheus metrics (service/metrics.py, every worker's under ``--workers``), so they
agree with ``/metrics``; counters survive a reload of an unchanged version.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from service.inference.repository import Manifest, TensorSpec
from service.inference.serving import ModelServer, ServedModel
from service.metrics import MULTIPROC_ENV, OUTCOMES, Metrics

from .. import examples
from ..deps import DeadlineDep, MetricsDep, ServerDep, observe
from ..errors import ApiError
from ..jsonbudget import oip_json_bytes, reserve_json
from ..oip import (
    HEADER_LENGTH,
    MANIFEST_TO_OIP,
    content_length,
    decode_infer_request,
    encode_infer_response,
    request_deadline,
)
from ..schemas import ModelMetadata, error_responses, ok

router = APIRouter(prefix="/v2/models", tags=["open inference protocol"])
OFFLOAD_BYTES = 64 * 1024  # parse bodies bigger than this off the event loop
PLATFORM = "onnxruntime_onnx"
# the OIP infer request: JSON, or the binary tensor extension (a JSON header of
# Inference-Header-Content-Length bytes, then the tensors); never empty
INFER_BODY = {
    "parameters": [{"name": "Inference-Header-Content-Length", "in": "header",
                    "required": False, "schema": {"type": "integer", "minimum": 0},
                    "description": "binary extension: the JSON header's length in bytes"}],
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["inputs"]},
                             "examples": examples.INFER_REQUEST},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                "minLength": 1}}}},
}
INFER_200 = {200: {"description": "the output tensors: JSON, or the binary tensor extension",
                   "content": {"application/json": {"schema": {"type": "object"},
                                                    "examples": examples.INFER_RESPONSE},
                               "application/octet-stream": {
                                   "schema": {"type": "string", "format": "binary"}}}}}
INFER = {"openapi_extra": INFER_BODY, "responses": {**INFER_200, **error_responses(
    400, 401, 404, 411, 413, 422, 429, 503, 504)}}
METADATA = {200: {"model": ModelMetadata}, **error_responses(401, 404, 503)}
PINNED = error_responses(400)  # a {version} that is not an integer


# declared before /{name}: /v2/models/stats lists every model's, it is no model named 'stats'
@router.get("/stats", operation_id="models_stats", summary="Statistics of every model",
            responses={**ok(examples.MODELS_STATS), **error_responses(401, 503)})
async def all_stats(server: ServerDep, metrics: MetricsDep) -> dict:
    """Triton's inference statistics of every served version (tritonclient's
    ``get_inference_statistics()``)."""
    served = [s for n in server.names() for _, s in sorted(server.versions(n).items())]
    return statistics(metrics, served)


# ---- metadata and readiness -------------------------------------------------------------------
def tensors(specs: list[TensorSpec]) -> list[dict]:
    return [{"name": t.name, "datatype": MANIFEST_TO_OIP.get(t.dtype, t.dtype.upper()),
             "shape": t.shape} for t in specs]


def metadata(server: ModelServer, name: str, version: int | None) -> dict:
    served = server.get(name, version)
    m = served.model.manifest
    return {
        "name": name,
        "versions": [str(v) for v in sorted(server.versions(name))] if version is None
        else [str(version)],
        "platform": PLATFORM,
        "inputs": tensors(m.inputs),
        "outputs": tensors(m.outputs),
        "parameters": {"version": served.version, "provider": served.provider,
                       "sha256": m.sha256, "kind": m.kind,
                       "preprocess_version": m.preprocess_version, "grid": m.grid,
                       **served.kind.oip_parameters(served.model)},
    }


@router.get("/{name}", operation_id="model_metadata", summary="Model metadata",
            responses={**METADATA, 200: {"model": ModelMetadata,
                                         **ok(examples.MODEL_METADATA)[200]}})
async def model_metadata(name: str, server: ServerDep) -> dict:
    """The model's served versions, input and output tensors (name, datatype, shape) and its
    parameters (kind, provider, sha256, grid; labels or physical parameters by kind)."""
    return metadata(server, name, None)


@router.get("/{name}/versions/{version}", operation_id="model_version_metadata",
            summary="Model version metadata", responses={
                **METADATA, **PINNED, 200: {"model": ModelMetadata,
                                            **ok(examples.MODEL_VERSION_METADATA)[200]}})
async def model_version_metadata(name: str, version: int, server: ServerDep) -> dict:
    """As the model's metadata, for one version."""
    return metadata(server, name, version)


@router.get("/{name}/ready", operation_id="model_ready", summary="Model readiness",
            responses={**ok(examples.MODEL_READY), **error_responses(401, 404, 503)})
async def model_ready(name: str, server: ServerDep) -> dict:
    """Whether the model is loaded and served (404 when not)."""
    server.get(name)
    return {"name": name, "ready": True}


@router.get("/{name}/versions/{version}/ready", operation_id="model_version_ready",
            summary="Model version readiness",
            responses={**ok(examples.MODEL_VERSION_READY), **error_responses(400, 401, 404, 503)})
async def model_version_ready(name: str, version: int, server: ServerDep) -> dict:
    """Whether this version of the model is loaded and served (404 when not)."""
    server.get(name, version)
    return {"name": name, "version": str(version), "ready": True}


# ---- infer ------------------------------------------------------------------------------------
def model_input(manifest: Manifest, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The one input the model takes, checked against its manifest (name, dtype, shape)."""
    spec = manifest.inputs[0]
    if set(arrays) != {spec.name}:
        raise ApiError(400, "bad_tensor", f"model takes one input {spec.name!r}; "
                       f"got {sorted(arrays)}")
    x = arrays[spec.name]
    if x.dtype != np.dtype(spec.dtype):
        raise ApiError(400, "bad_dtype", f"{spec.name}: {MANIFEST_TO_OIP[spec.dtype]} expected")
    if x.ndim != len(spec.shape) or any(d >= 0 and d != n for d, n in zip(spec.shape, x.shape)):
        raise ApiError(400, "bad_shape", f"{spec.name}: shape {list(x.shape)} does not match "
                       f"{spec.shape}")
    if x.shape[0] == 0:
        raise ApiError(400, "bad_shape", f"{spec.name}: empty batch")
    return np.ascontiguousarray(x)


async def oip_infer(name: str, version: int | None, request: Request, server: ModelServer,
                    metrics: Metrics, deadline: float | None) -> Response:
    """OIP infer on a served version of any kind (the hot route's handler too)."""
    async with server.use(name, version) as served:
        kind = served.kind
        # a kind that bounds its working memory needs the size first (411/413 before the
        # request is counted, as a refused header)
        n = content_length(request, served.pipeline.max_file_bytes) if kind.sized_bodies \
            else None
        async with observe(metrics, served) as obs, (
                nullcontext() if n is None else kind.reserve(served.model, n)):
            body = await request.body()
            header_length = request.headers.get(HEADER_LENGTH)
            reserve_json(request, oip_json_bytes(body, header_length))
            if len(body) > OFFLOAD_BYTES:
                req, arrays = await asyncio.get_running_loop().run_in_executor(
                    server.pool, decode_infer_request, body, header_length)
            else:
                req, arrays = decode_infer_request(body, header_length)
            x = model_input(served.model.manifest, arrays)
            obs.items = int(x.shape[0])
            outputs = await served.pipeline.infer(x, request_deadline(req.parameters, deadline))
            content, headers = encode_infer_response(name, served.version, req, outputs)
    return Response(content, headers=headers)


@router.post("/{name}/infer", operation_id="model_infer", summary="OIP v2 inference", **INFER)
async def infer(name: str, request: Request, server: ServerDep, metrics: MetricsDep,
                deadline: DeadlineDep) -> Response:
    """Open Inference Protocol v2 infer on the latest version: model-ready (preprocessed)
    tensors in, as JSON or the binary tensor extension, the raw output tensors out. Spectrum
    models take ``spectrum`` FP32 [N, 2, npix]; lightcone models ``lightcone`` FP32
    [N, 1, n_xy, n_xy, n_los]. Batched with the native endpoints' requests."""
    return await oip_infer(name, None, request, server, metrics, deadline)


@router.post("/{name}/versions/{version}/infer", operation_id="model_version_infer",
             summary="OIP v2 inference on one version", **INFER)
async def infer_version(name: str, version: int, request: Request, server: ServerDep,
                        metrics: MetricsDep, deadline: DeadlineDep) -> Response:
    """As OIP infer, pinned to one version of the model."""
    return await oip_infer(name, version, request, server, metrics, deadline)


# ---- Triton's model configuration extension ---------------------------------------------------
def config_tensors(specs: list[TensorSpec]) -> list[dict]:
    """Triton's tensor config: ``dims`` without the batch axis (``max_batch_size`` > 0); a
    scalar per row is ``dims [1]`` reshaped to ``[]``, as Triton writes it."""
    out = []
    for t in specs:
        dims = t.shape[1:] if t.shape and t.shape[0] < 0 else t.shape
        entry = {"name": t.name, "data_type": "TYPE_" + MANIFEST_TO_OIP.get(t.dtype,
                                                                           t.dtype.upper()),
                 "format": "FORMAT_NONE", "dims": dims or [1]}
        if not dims:
            entry["reshape"] = {"shape": []}
        out.append(entry)
    return out


def model_config(server: ModelServer, name: str, version: int | None) -> dict:
    served = server.get(name, version)
    m, batcher = served.model.manifest, served.pipeline.batcher
    policy = ({"all": {}} if server.settings.version_policy == "all"
              else {"latest": {"num_versions": 1}})
    return {
        "name": name, "platform": PLATFORM, "backend": "onnxruntime",
        "version_policy": policy,
        "max_batch_size": batcher.max_batch_size,
        "input": config_tensors(m.inputs), "output": config_tensors(m.outputs),
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(batcher.max_queue_delay_s * 1e6)},
        "parameters": {"kind": {"string_value": m.kind},
                       "preprocess_version": {"string_value": m.preprocess_version}},
    }


@router.get("/{name}/config", operation_id="model_config", summary="Model configuration",
            responses={**ok(examples.MODEL_CONFIG), **error_responses(401, 404, 503)})
async def config(name: str, server: ServerDep) -> dict:
    """Triton's model configuration of the latest version (tritonclient's
    ``get_model_config``): platform, ``max_batch_size`` (the dynamic batcher's), inputs and
    outputs with ``data_type`` and ``dims`` (without the batch axis)."""
    return model_config(server, name, None)


@router.get("/{name}/versions/{version}/config", operation_id="model_version_config",
            summary="Model version configuration",
            responses={**ok(examples.MODEL_VERSION_CONFIG), **error_responses(400, 401, 404, 503)})
async def version_config(name: str, version: int, server: ServerDep) -> dict:
    """As the model's configuration, for one version."""
    return model_config(server, name, version)


# ---- Triton's statistics extension ------------------------------------------------------------
def families(metrics: Metrics) -> Iterable[Metric]:
    """The metric families as ``/metrics`` exports them: every worker's under --workers."""
    path = os.environ.get(MULTIPROC_ENV)
    return MultiProcessCollector(None, path).collect() if path else metrics.registry.collect()


def totals(metrics: Metrics) -> dict[tuple[str, str], dict[str, float]]:
    """(model, version) → {sample name (``:outcome`` appended for counts by outcome): value}
    of the inference metrics (the ``endpoint``-labelled saliency family is not inference)."""
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in families(metrics):
        if not family.name.startswith("specula_") or family.name.startswith("specula_explain"):
            continue
        for s in family.samples:
            if "model" not in s.labels or s.name.endswith(("_created", "_bucket")):
                continue
            key = s.name + (f":{s.labels['outcome']}" if "outcome" in s.labels else "")
            out[(s.labels["model"], s.labels["version"])][key] += s.value
    return out


def duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(seconds * 1e9)}


def version_stats(served: ServedModel, t: dict[str, float]) -> dict[str, Any]:
    """One version's statistics in Triton's shape. ``success.ns`` is the time of every
    finished request: the service's latency histogram is not split by outcome."""
    success = t["specula_requests_total:success"]
    failed = sum(t[f"specula_requests_total:{o}"] for o in OUTCOMES if o != "success")
    none = duration(0, 0)
    return {
        "name": served.name, "version": str(served.version), "last_inference": 0,
        "inference_count": int(t["specula_inference_items_total"]),
        "execution_count": int(t["specula_batches_total"]),
        "inference_stats": {
            "success": duration(success, t["specula_request_duration_seconds_sum"]),
            "fail": duration(failed, 0),
            "queue": duration(t["specula_queue_duration_seconds_count"],
                              t["specula_queue_duration_seconds_sum"]),
            # decode + preprocess of the native endpoints: the input side of a request
            "compute_input": duration(t["specula_preprocess_duration_seconds_count"],
                                      t["specula_preprocess_duration_seconds_sum"]),
            "compute_infer": duration(t["specula_compute_duration_seconds_count"],
                                      t["specula_compute_duration_seconds_sum"]),
            "compute_output": none, "cache_hit": none, "cache_miss": none},
        "batch_stats": [],
    }


def statistics(metrics: Metrics, served: list[ServedModel]) -> dict:
    t = totals(metrics)
    return {"model_stats": [version_stats(s, t[(s.name, str(s.version))]) for s in served]}


@router.get("/{name}/stats", operation_id="model_stats", summary="Model statistics",
            responses={**ok(examples.MODEL_STATS), **error_responses(401, 404, 503)})
async def stats(name: str, server: ServerDep, metrics: MetricsDep) -> dict:
    """Triton's inference statistics of every served version of the model: requests by
    success and failure with their time, queue and compute time, rows and batches run."""
    server.get(name)
    return statistics(metrics, [s for _, s in sorted(server.versions(name).items())])


@router.get("/{name}/versions/{version}/stats", operation_id="model_version_stats",
            summary="Model version statistics",
            responses={**ok(examples.MODEL_VERSION_STATS), **error_responses(400, 401, 404, 503)})
async def version_stats_route(name: str, version: int, server: ServerDep, metrics: MetricsDep
                              ) -> dict:
    """As the model's statistics, for one version."""
    return statistics(metrics, [server.get(name, version)])
