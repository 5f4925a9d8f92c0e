"""Open Inference Protocol v2 model endpoints: metadata, readiness, infer.

``infer`` takes model-ready tensors (``spectrum``: FP32 [N, 2, npix], already preprocessed)
and returns the raw output tensors; it shares the model's batcher with /v1, so OIP and native
requests are batched together.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from fastapi import APIRouter, Request, Response

from service.inference.repository import Manifest

from ..deps import DeadlineDep, MetricsDep, ServerDep, observe
from ..errors import ApiError
from ..jsonbudget import oip_json_bytes, reserve_json
from ..oip import HEADER_LENGTH, MANIFEST_TO_OIP, decode_infer_request, encode_infer_response
from ..schemas import error_responses

router = APIRouter(prefix="/v2/models", tags=["open inference protocol"])
OFFLOAD_BYTES = 64 * 1024  # parse bodies bigger than this off the event loop
# routers.lightcones declares (and answers) the routes this router shares with it, calling
# these handlers for spectrum models; here they stay out of the schema, which would otherwise
# list each operation twice under one operation id
SHADOWED = {"include_in_schema": False}
# the OIP infer request: JSON, or the binary tensor extension (a JSON header of
# Inference-Header-Content-Length bytes, then the tensors); never empty
INFER_BODY = {
    "parameters": [{"name": "Inference-Header-Content-Length", "in": "header",
                    "required": False, "schema": {"type": "integer", "minimum": 0},
                    "description": "binary extension: the JSON header's length in bytes"}],
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                "minLength": 1}}}},
}
INFER_200 = {200: {"description": "the output tensors: JSON, or the binary tensor extension",
                   "content": {"application/json": {"schema": {"type": "object"}},
                               "application/octet-stream": {
                                   "schema": {"type": "string", "format": "binary"}}}}}


def tensors(specs) -> list[dict]:
    return [{"name": t.name, "datatype": MANIFEST_TO_OIP.get(t.dtype, t.dtype.upper()),
             "shape": t.shape} for t in specs]


def metadata(server, name: str, version: int | None) -> dict:
    served = server.get(name, version)
    m = served.model.manifest
    return {
        "name": name,
        "versions": [str(v) for v in sorted(server.versions(name))] if version is None
        else [str(version)],
        "platform": "onnxruntime_onnx",
        "inputs": tensors(m.inputs),
        "outputs": tensors(m.outputs),
        "parameters": {"version": served.version, "provider": served.provider,
                       "sha256": m.sha256, "kind": m.kind,
                       "preprocess_version": m.preprocess_version,
                       "labels": [lab.model_dump() for lab in m.labels],
                       "top_classes": m.top_classes, "grid": m.grid},
    }


@router.get("/{name}", **SHADOWED)
async def model_metadata(name: str, server: ServerDep) -> dict:
    return metadata(server, name, None)


@router.get("/{name}/versions/{version}", **SHADOWED)
async def model_version_metadata(name: str, version: int, server: ServerDep) -> dict:
    return metadata(server, name, version)


@router.get("/{name}/ready", **SHADOWED)
async def model_ready(name: str, server: ServerDep) -> dict:
    server.get(name)  # 404 when not served
    return {"name": name, "ready": True}


@router.get("/{name}/versions/{version}/ready", operation_id="model_version_ready",
            summary="Model version readiness",
            responses=error_responses(400, 401, 404, 503))
async def model_version_ready(name: str, version: int, server: ServerDep) -> dict:
    """Whether this version of the model is loaded and served (404 when not)."""
    server.get(name, version)
    return {"name": name, "version": str(version), "ready": True}


def model_input(manifest: Manifest, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The one input the model takes, checked against its manifest (name, dtype, shape); the
    one check for every model kind served over OIP."""
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
    return x


async def run_infer(name: str, version: int | None, request: Request, server, metrics,
                    deadline: float | None) -> Response:
    async with server.use(name, version) as served, observe(metrics, served) as obs:
        body = await request.body()
        header_length = request.headers.get(HEADER_LENGTH)
        reserve_json(request, oip_json_bytes(body, header_length))
        if len(body) > OFFLOAD_BYTES:
            req, arrays = await asyncio.get_running_loop().run_in_executor(
                server.pool, decode_infer_request, body, header_length)
        else:
            req, arrays = decode_infer_request(body, header_length)
        timeout_us = req.parameters.get("timeout")  # Triton's per-request timeout
        if isinstance(timeout_us, int) and timeout_us > 0:
            t = time.monotonic() + timeout_us / 1e6
            deadline = t if deadline is None else min(deadline, t)
        x = model_input(served.model.manifest, arrays)
        obs.items = int(x.shape[0])
        outputs = await served.pipeline.infer(x, deadline)
        content, headers = encode_infer_response(name, served.version, req, outputs)
    return Response(content, headers=headers)


@router.post("/{name}/infer", **SHADOWED)
async def infer(name: str, request: Request, server: ServerDep, metrics: MetricsDep,
                deadline: DeadlineDep) -> Response:
    return await run_infer(name, None, request, server, metrics, deadline)


@router.post("/{name}/versions/{version}/infer", **SHADOWED)
async def infer_version(name: str, version: int, request: Request, server: ServerDep,
                        metrics: MetricsDep, deadline: DeadlineDep) -> Response:
    return await run_infer(name, version, request, server, metrics, deadline)
