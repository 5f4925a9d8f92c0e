"""Lightcone endpoints: ``POST /v1/lightcones:infer`` and OIP v2 for lightcone models.

``/v1/lightcones:infer`` takes one cube as the binary request body — never JSON lists:
- raw little-endian float32 with ``?shape=n_x,n_y,n_los`` (C order, line of sight last), or
- a file: ``.npy`` (no pickle), FITS cube or HDF5 (21cmFAST's own output or ``hdf5-cube``),
  identified from its bytes (``?format=`` forces a reader).
A cube on the model grid needs nothing else; any other cube needs its axes — from the file
(21cmFAST HDF5, FITS WCS) or the query (``z_first``/``z_last`` or ``nu_first_mhz``/
``nu_last_mhz``, and ``cell_mpc``) — and is then resampled/cropped onto the grid. Declared sizes
(Content-Length, ``shape``) are checked against the limits and the model *before* anything is
read; each request reserves working memory from the lightcone byte budget before its body is
read, and the body is streamed into one preallocated buffer. Response: each parameter's mean
and σ in physical units.

OIP v2 (``/v2/models/<lightcone model>/...``, binary tensor extension): input ``lightcone``
FP32 [N, 1, n_xy, n_xy, n_los] (already preprocessed), outputs ``theta_mean``/``theta_sigma``.
This router is included before the spectrum OIP router; for any model that is not a lightcone
model it defers to that router's handlers, so ``/v2/models/{name}`` keeps one meaning.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response

from service.inference.lightcone import (
    Axes,
    Decoded,
    LightconeModels,
    ServedLightcone,
    check_declared_shape,
)
from service.inference.lightcone_saliency import LightconeSaliency, check_params
from service.inference.plots import lightcone_saliency_figure
from service.inference.repository import ModelError
from service.inference.saliency import MAX_ROWS_PER_SPECTRUM, Method, MethodParams, SaliencyError
from service.lightcones import LightconeError

from ..deps import DeadlineDep, MetricsDep, ServerDep, observe
from ..errors import ApiError
from ..jsonbudget import oip_json_bytes, reserve_json
from ..oip import HEADER_LENGTH, decode_infer_request, encode_infer_response
from ..schemas import ModelMetadata, error_responses
from . import models as spectrum_oip
from .saliency import JSON, MAPS_200, NPY, PNG, _npy, wants

BUDGET_FILES = 4  # working memory per upload ≈ body + its copy + float32 cube + resampled cube
# one cube as the raw body, sized by Content-Length (411 without it); an empty body is a 400
CUBE_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary", "minLength": 1,
               "description": "raw float32 (with ?shape=), .npy, FITS cube or HDF5"}}}}}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the lightcone models next to the spectrum ones; drain their batchers at stop."""
    s = app.state.settings
    models = LightconeModels(s.model_repository, pool=app.state.server.pool,
                             on_stats=app.state.metrics.record, max_file_bytes=s.max_file_bytes,
                             budget_bytes=s.lightcone_max_bytes or BUDGET_FILES * s.max_file_bytes,
                             device=s.device,
                             intra_op_threads=s.intra_op_threads,
                             saliency_max_batch_rows=s.lightcone_saliency_max_batch_rows,
                             saliency_max_queue_rows=s.saliency_max_queue_rows)
    app.state.lightcones = models
    await models.load()
    try:
        yield
    finally:
        await models.close()


router = APIRouter(tags=["lightcones"], lifespan=lifespan)


def get_lightcones(request: Request) -> LightconeModels:
    return request.app.state.lightcones


LightconesDep = Annotated[LightconeModels, Depends(get_lightcones)]


def parse_shape(raw: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in raw.replace("x", ",").split(","))
    except ValueError:
        raise ApiError(400, "bad_request", f"shape must be 'n_x,n_y,n_los', got {raw!r}")
    return shape


async def read_body_into(request: Request, buf: memoryview, source: str) -> None:
    """Stream the body into ``buf``; exactly ``len(buf)`` bytes or a 400."""
    pos = 0
    async for chunk in request.stream():
        end = pos + len(chunk)
        if end > len(buf):
            raise LightconeError("bad_shape", f"body longer than the {len(buf)} bytes declared",
                                 source=source)
        buf[pos:end] = chunk
        pos = end
    if pos != len(buf):
        raise LightconeError("bad_shape", f"body has {pos} bytes; {len(buf)} declared",
                             source=source)


def content_length(request: Request, limit: int) -> int:
    raw = request.headers.get("content-length")
    if raw is None or not raw.isdigit():
        raise ApiError(411, "length_required", "send Content-Length: cubes are sized before "
                       "they are read")
    n = int(raw)
    if n == 0:
        raise ApiError(400, "bad_request", "empty body: send the cube as the request body")
    if n > limit:
        raise ApiError(413, "too_large", f"{n} bytes > limit {limit} (SPECULA_MAX_FILE_BYTES)")
    return n


@dataclass
class CubeQuery:
    """The query of every endpoint that takes a cube as its body: which model reads it, and
    how to read it (reader, raw shape, axes)."""

    model: Annotated[str | None, Query(description="lightcone model (default: the only/"
                                       "first)")] = None
    version: Annotated[int | None, Query()] = None
    format: Annotated[str | None, Query(description="force a reader: 21cmfast-h5, hdf5-cube, "
                                        "npy, fits-cube")] = None
    shape: Annotated[str | None, Query(description="raw float32 body: n_x,n_y,n_los")] = None
    z_first: float | None = None
    z_last: float | None = None
    nu_first_mhz: float | None = None
    nu_last_mhz: float | None = None
    cell_mpc: float | None = None

    def served(self, lightcones: LightconeModels) -> ServedLightcone:
        names = lightcones.names()
        if not self.model and not names:  # model= (empty) names no model either
            raise ModelError("model_not_found", "no lightcone model is being served")
        return lightcones.get(self.model or names[0], self.version)

    @property
    def axes(self) -> Axes:
        return Axes(self.z_first, self.z_last, self.nu_first_mhz, self.nu_last_mhz,
                    self.cell_mpc)


CubeDep = Annotated[CubeQuery, Depends()]


def source_name(request: Request) -> str:
    return request.headers.get("x-filename") or "body"


async def read_cube(request: Request, lightcones: LightconeModels, pipe, q: CubeQuery
                    ) -> Decoded:
    """The request body → the model input, under a reservation of the lightcone byte budget
    held while the body is read and decoded."""
    name, axes = source_name(request), q.axes
    n = content_length(request, pipe.max_file_bytes)
    if q.shape is not None:  # raw float32: everything is known before one byte is read
        dims = parse_shape(q.shape)
        check_declared_shape(dims, pipe.grid, axes.given, pipe.max_file_bytes // 4, name)
        if n != math.prod(dims) * 4:
            raise LightconeError("bad_shape", f"Content-Length {n} != {math.prod(dims)} "
                                 "float32 values of shape " + str(dims), source=name)
        async with lightcones.budget.reserve(3 * n):
            cube = np.empty(dims, dtype="<f4")
            await read_body_into(request, memoryview(cube).cast("B"), name)
            return await pipe.run_decode(pipe.cube_and_preprocess, cube, name, axes)
    async with lightcones.budget.reserve(BUDGET_FILES * n):
        buf = bytearray(n)
        await read_body_into(request, memoryview(buf), name)
        data = bytes(buf)
        del buf
        return await pipe.run_decode(pipe.decode_and_preprocess, data, name, q.format, axes)


@router.post("/v1/lightcones:infer", operation_id="lightcone_infer", openapi_extra=CUBE_BODY,
             summary="Estimate 21cm parameters from a lightcone cube",
             responses=error_responses(400, 401, 404, 411, 413, 415, 422, 429, 503, 504))
async def infer_lightcone(
    request: Request, lightcones: LightconesDep, metrics: MetricsDep, deadline: DeadlineDep,
    q: CubeDep,
) -> Response:
    """One 21cm brightness-temperature lightcone in (raw float32 with ``?shape=``, .npy,
    FITS cube or HDF5), each astrophysical parameter's posterior mean and 1σ out, in the
    parameter's physical units. A cube off the model grid is resampled onto it from its axes
    (read from the file, or ``z_first``/``z_last`` or ``nu_first_mhz``/``nu_last_mhz`` and
    ``cell_mpc``)."""
    served = q.served(lightcones)
    pipe = served.pipeline
    async with observe(metrics, served) as obs:
        decoded = await read_cube(request, lightcones, pipe, q)
        outputs = await pipe.infer(decoded.x, deadline)
        obs.items = 1
        body = pipe.encode_response(decoded, outputs)
    return Response(orjson.dumps(body), media_type="application/json")


# ---- saliency -------------------------------------------------------------------------------
JSON_MAX_VOXELS = 1 << 15  # the whole map in JSON up to the v2 grid (16·16·128); else npy


def lightcone_explainer(served: ServedLightcone) -> LightconeSaliency:
    if served.saliency is None:
        raise ApiError(409, "saliency_unavailable", served.saliency_unavailable
                       or f"{served.name} v{served.version} has no saliency graph")
    return served.saliency


@router.post("/v1/lightcones:saliency", operation_id="lightcone_saliency",
             summary="Saliency map of a lightcone parameter estimate",
             openapi_extra=CUBE_BODY, responses={**MAPS_200, **error_responses(
                 400, 401, 404, 409, 411, 413, 415, 422, 429, 503, 504)})
async def lightcone_saliency(
    request: Request, lightcones: LightconesDep, metrics: MetricsDep, deadline: DeadlineDep,
    q: CubeDep,
    target: Annotated[str | None, Query(description="a parameter name (its mean), or "
                                        "'<name>:sigma'; default HII_EFF_FACTOR (ζ)")] = None,
    method: Annotated[Method, Query(description="the attribution method")] = "gradient",
    samples: Annotated[int, Query(ge=1, le=MAX_ROWS_PER_SPECTRUM,
                                  description="smoothgrad: noisy copies n")] = 5,
    sigma: Annotated[float, Query(ge=0.0, le=5.0, description="smoothgrad: noise σ / "
                                  "(p99 − p1) of the cube")] = 0.2,
    steps: Annotated[int, Query(ge=1, le=MAX_ROWS_PER_SPECTRUM,
                                description="integrated gradients: path steps m")] = 16,
    baseline: Annotated[Literal["zeros", "sky_mean"],
                        Query(description="integrated gradients: the path's start")] = "zeros",
    seed: Annotated[int, Query(description="smoothgrad noise seed")] = 0,
    out: Annotated[str | None, Query(description="json | npy | png (overrides Accept)")] = None,
    slice_axis: Annotated[Literal["x", "y"],
                          Query(description="png: the sky axis held fixed")] = "x",
    slice_index: Annotated[int | None, Query(description="png: its index (default: middle)")]
    = None,
    los_index: Annotated[int | None, Query(description="png: also show the sky plane at "
                                           "this line-of-sight channel")] = None,
) -> Response:
    """Which voxels of the cube drove a parameter estimate: the map on the model grid
    (X, Y, L; L in increasing frequency), the prediction it explains, the model version.
    Same bodies as ``/v1/lightcones:infer``; ``Accept`` application/json, application/x-npy
    (the map, float32) or image/png (a slice through cube and map)."""
    served = q.served(lightcones)
    pipe = served.pipeline
    name = source_name(request)
    media = wants(request, out)
    params = MethodParams(method=method, samples=samples, sigma=sigma,  # type: ignore[arg-type]
                          steps=steps, baseline=baseline, seed=seed)  # type: ignore[arg-type]
    async with observe(metrics, served, "saliency") as obs:
        try:
            sal = lightcone_explainer(served)
            check_params(params)
            tgt = sal.parse_target(target)
            if media == PNG:
                check_slice(pipe.grid, slice_axis, slice_index, los_index)
            decoded = await read_cube(request, lightcones, pipe, q)
            # rows in flight: inputs, their gradients, the expansion's own copy
            async with lightcones.budget.reserve(3 * (params.rows + 2) * decoded.x.nbytes):
                res = await sal.explain(decoded.x[0], tgt, params, deadline)
        except SaliencyError as exc:
            raise ApiError(exc.status, exc.code, exc.detail) from None
        obs.items = 1
    prediction = pipe.encode_response(decoded, {k: np.asarray(v)[None]
                                                for k, v in res["outputs"].items()})
    grid = pipe.grid
    if media == NPY:
        return Response(_npy(res["map"]), media_type=NPY, headers={
            "x-specula-model": served.name, "x-specula-version": str(served.version),
            "x-specula-explained": res["explained"]["target"],
            "x-specula-value": repr(res["explained"]["value"])})
    if media == PNG:
        est = prediction["parameters"][tgt.name]
        kw = {"cube_mk": decoded.x[0, 0] * grid.scale_mk, "saliency": res["map"],
              "frequencies_mhz": grid.frequencies_mhz, "cell_mpc": grid.cell_mpc,
              "explained": res["explained"], "estimate": est, "method": res["method"],
              "model": served.name, "version": served.version, "slice_axis": slice_axis,
              "slice_index": slice_index, "los_index": los_index, "source": name}
        png = await asyncio.get_running_loop().run_in_executor(
            None, lambda: lightcone_saliency_figure(**kw))
        return Response(png, media_type=PNG)
    m = res["map"]
    body = {**prediction, "explained": res["explained"], "method": res["method"],
            "grid": {"shape": list(m.shape), "axes": ["x", "y", "los (increasing frequency)"],
                     "cell_mpc": grid.cell_mpc,
                     "frequencies_mhz": grid.frequencies_mhz.astype(np.float32),
                     "redshifts": grid.redshifts.astype(np.float32)},
            # where along the line of sight (i.e. when) the estimate was read from
            "los_profile": {"sum": m.sum(axis=(0, 1)), "sum_abs": np.abs(m).sum(axis=(0, 1))}}
    if m.size <= JSON_MAX_VOXELS:
        body["saliency"] = m
    else:
        body["saliency"] = None
        body["note"] = (f"the map has {m.size} voxels > {JSON_MAX_VOXELS}: ask for "
                        "Accept: application/x-npy to get it")
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON)


def check_slice(grid, axis: str, index: int | None, los_index: int | None) -> None:
    if axis not in ("x", "y"):
        raise SaliencyError(400, "bad_request", "slice_axis must be x or y")
    if index is not None and not 0 <= index < grid.n_xy:
        raise SaliencyError(400, "bad_request", f"slice_index must be in [0, {grid.n_xy})")
    if los_index is not None and not 0 <= los_index < grid.n_los:
        raise SaliencyError(400, "bad_request", f"los_index must be in [0, {grid.n_los})")


# ---- OIP v2 for lightcone models (everything else defers to the spectrum router) ------------
def lightcone_metadata(lightcones: LightconeModels, name: str, version: int | None) -> dict:
    served = lightcones.get(name, version)
    m = served.model.manifest
    return {
        "name": name,
        "versions": [str(v) for v in sorted(lightcones._models[name])] if version is None
        else [str(version)],
        "platform": "onnxruntime_onnx",
        "inputs": spectrum_oip.tensors(m.inputs),
        "outputs": spectrum_oip.tensors(m.outputs),
        "parameters": {"version": served.version, "provider": served.provider,
                       "sha256": m.sha256, "kind": m.kind,
                       "preprocess_version": m.preprocess_version, "grid": m.grid,
                       "parameters": getattr(m, "parameters", [])},
    }


async def lightcone_oip_infer(name: str, version: int | None, request: Request,
                              lightcones: LightconeModels, metrics, deadline) -> Response:
    served = lightcones.get(name, version)
    spec = served.model.manifest.inputs[0]
    per_item = math.prod(d for d in spec.shape if d > 0) * 4
    n = content_length(request, served.pipeline.max_file_bytes)
    async with observe(metrics, served) as obs, lightcones.budget.reserve(2 * n + per_item):
        body = await request.body()
        reserve_json(request, oip_json_bytes(body, request.headers.get(HEADER_LENGTH)))
        req, arrays = await asyncio.get_running_loop().run_in_executor(
            served.pipeline.pool, decode_infer_request, body, request.headers.get(HEADER_LENGTH))
        timeout_us = req.parameters.get("timeout")
        if isinstance(timeout_us, int) and timeout_us > 0:
            t = time.monotonic() + timeout_us / 1e6
            deadline = t if deadline is None else min(deadline, t)
        x = spectrum_oip.model_input(served.model.manifest, arrays)
        obs.items = int(x.shape[0])
        outputs = await served.pipeline.infer(np.ascontiguousarray(x), deadline)
        content, headers = encode_infer_response(name, served.version, req, outputs)
    return Response(content, headers=headers)


oip = APIRouter(prefix="/v2/models", tags=["open inference protocol"])
METADATA = {200: {"model": ModelMetadata}, **error_responses(401, 404, 503)}
INFER = {
    "openapi_extra": spectrum_oip.INFER_BODY,
    "responses": {**spectrum_oip.INFER_200, **error_responses(
        400, 401, 404, 411, 413, 422, 429, 503, 504)},
}


@oip.get("/{name}", operation_id="model_metadata", summary="Model metadata",
         responses=METADATA)
async def model_metadata(name: str, request: Request, server: ServerDep):
    """The model's served versions, input and output tensors (name, datatype, shape) and its
    parameters (provider, sha256, labels, grid)."""
    lc: LightconeModels = request.app.state.lightcones
    if lc.has(name):
        return lightcone_metadata(lc, name, None)
    return await spectrum_oip.model_metadata(name, server)


@oip.get("/{name}/versions/{version}", operation_id="model_version_metadata",
         summary="Model version metadata",
         responses={**METADATA, **error_responses(400)})
async def model_version_metadata(name: str, version: int, request: Request, server: ServerDep):
    """As the model's metadata, for one version."""
    lc: LightconeModels = request.app.state.lightcones
    if lc.has(name):
        return lightcone_metadata(lc, name, version)
    return await spectrum_oip.model_version_metadata(name, version, server)


@oip.get("/{name}/ready", operation_id="model_ready", summary="Model readiness",
         responses=error_responses(401, 404, 503))
async def model_ready(name: str, request: Request, server: ServerDep):
    """Whether the model is loaded and served (404 when not)."""
    lc: LightconeModels = request.app.state.lightcones
    if lc.has(name):
        return {"name": name, "ready": True}
    return await spectrum_oip.model_ready(name, server)


@oip.post("/{name}/infer", operation_id="model_infer", summary="OIP v2 inference", **INFER)
async def infer(name: str, request: Request, server: ServerDep, metrics: MetricsDep,
                deadline: DeadlineDep) -> Response:
    """Open Inference Protocol v2 infer on the latest version: model-ready (preprocessed)
    tensors in, as JSON or the binary tensor extension, the raw output tensors out. Spectrum
    models take ``spectrum`` FP32 [N, 2, npix]; lightcone models ``lightcone`` FP32
    [N, 1, n_xy, n_xy, n_los]. Batched with the native endpoints' requests."""
    return await oip_infer(name, None, request, server, metrics, deadline)


@oip.post("/{name}/versions/{version}/infer", operation_id="model_version_infer",
          summary="OIP v2 inference on one version", **INFER)
async def infer_version(name: str, version: int, request: Request, server: ServerDep,
                        metrics: MetricsDep, deadline: DeadlineDep) -> Response:
    """As OIP infer, pinned to one version of the model."""
    return await oip_infer(name, version, request, server, metrics, deadline)


async def oip_infer(name: str, version: int | None, request: Request, server, metrics,
                    deadline: float | None) -> Response:
    """OIP infer for any served model: a lightcone model here, a spectrum model in
    routers.models (also the hot route's handler, service.api.hotpath)."""
    lc: LightconeModels = request.app.state.lightcones
    if lc.has(name):
        return await lightcone_oip_infer(name, version, request, lc, metrics, deadline)
    return await spectrum_oip.run_infer(name, version, request, server, metrics, deadline)


router.include_router(oip)
