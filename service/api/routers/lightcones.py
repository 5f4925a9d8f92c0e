"""Lightcone endpoints: ``POST /v1/lightcones:infer`` and ``POST /v1/lightcones:saliency``.

``/v1/lightcones:infer`` takes one cube as the binary request body — never JSON lists:
- raw little-endian float32 with ``?shape=n_x,n_y,n_los`` (C order, line of sight last), or
- a file: ``.npy`` (no pickle), FITS cube or HDF5 (21cmFAST's own output or ``hdf5-cube``),
  identified from its bytes (``?format=`` forces a reader).
A cube on the model grid needs nothing else; any other cube needs its axes — from the file
(21cmFAST HDF5, FITS WCS) or the query (``z_first``/``z_last`` or ``nu_first_mhz``/
``nu_last_mhz``, and ``cell_mpc``) — and is then resampled onto the grid, a wider sky as sky
patches of the model's field. Declared sizes
(Content-Length, ``shape``) are checked against the limits and the model *before* anything is
read; each request reserves working memory from the lightcone byte budget before its body is
read, and the body is streamed into one preallocated buffer. Response: each parameter's mean
and σ in physical units.

Lightcone models are served by the one model server like every kind (loaded, reloaded and
retired with the others) and answer OIP v2 through routers/oip.py; this router holds only the
native endpoints, which take a lease on a version of kind ``lightcone-regressor``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from service.inference.lightcone import (
    BUDGET_FILES,
    KIND,
    Axes,
    ByteBudget,
    Decoded,
    check_declared_shape,
)
from service.inference.lightcone_saliency import LightconeSaliency, check_params
from service.inference.repository import ModelError
from service.inference.saliency import MAX_ROWS_PER_SPECTRUM, Method, MethodParams
from service.inference.serving import ModelServer, ServedModel
from service.lightcones import LightconeError

from .. import examples
from ..deps import DeadlineDep, MetricsDep, ServerDep, observe
from ..errors import ApiError
from ..media import JSON, MAPS_200, NPY, PNG, npy_bytes, wants
from ..oip import content_length
from ..plots import lightcone_saliency_figure
from ..schemas import error_responses, json_examples, ok

# one cube as the raw body, sized by Content-Length (411 without it); an empty body is a 400
CUBE_BODY = {"requestBody": {"required": True, "description": (
    "One cube as the body, e.g. a 21cmFAST file: `curl --data-binary @simrun_0.h5 -H "
    "'Content-Type: application/octet-stream' -H 'X-Filename: simrun_0.h5' URL`; raw float32 "
    "on the model grid: `curl --data-binary @cube.f32 'URL?shape=16,16,128'`."),
    "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary", "minLength": 1,
               "description": "raw float32 (with ?shape=), .npy, FITS cube or HDF5"}}}}}


router = APIRouter(tags=["lightcones"])


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

    def model_name(self, server: ModelServer) -> str:
        """The named model, or the first lightcone model served."""
        names = server.names(kind=KIND)
        if not self.model and not names:  # model= (empty) names no model either
            raise ModelError("model_not_found", "no lightcone model is being served")
        return self.model or names[0]

    @property
    def axes(self) -> Axes:
        return Axes(self.z_first, self.z_last, self.nu_first_mhz, self.nu_last_mhz,
                    self.cell_mpc)


CubeDep = Annotated[CubeQuery, Depends()]


def source_name(request: Request) -> str:
    return request.headers.get("x-filename") or "body"


def budget_of(served: ServedModel) -> ByteBudget:
    """The byte budget every lightcone request reserves from (the kind's, one per server)."""
    return served.kind.budget  # type: ignore[attr-defined]


async def read_cube(request: Request, budget: ByteBudget, pipe, q: CubeQuery) -> Decoded:
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
        async with budget.reserve(3 * n + pipe.patch_bytes):
            cube = np.empty(dims, dtype="<f4")
            await read_body_into(request, memoryview(cube).cast("B"), name)
            return await pipe.run_decode(pipe.cube_and_preprocess, cube, name, axes)
    async with budget.reserve(BUDGET_FILES * n + pipe.patch_bytes):
        buf = bytearray(n)
        await read_body_into(request, memoryview(buf), name)
        data = bytes(buf)
        del buf
        return await pipe.run_decode(pipe.decode_and_preprocess, data, name, q.format, axes)


@router.post("/v1/lightcones:infer", operation_id="lightcone_infer", openapi_extra=CUBE_BODY,
             summary="Estimate 21cm parameters from a lightcone cube",
             responses={**ok(examples.LIGHTCONE_INFER), **error_responses(
                 400, 401, 404, 411, 413, 415, 422, 429, 503, 504,
                 examples={422: examples.LIGHTCONE_422})})
async def infer_lightcone(
    request: Request, server: ServerDep, metrics: MetricsDep, deadline: DeadlineDep,
    q: CubeDep,
) -> Response:
    """One 21cm brightness-temperature lightcone in (raw float32 with ``?shape=``, .npy,
    FITS cube or HDF5), each astrophysical parameter's posterior mean and 1σ out, in the
    parameter's physical units. A cube off the model grid is resampled onto it from its axes
    (read from the file, or ``z_first``/``z_last`` or ``nu_first_mhz``/``nu_last_mhz`` and
    ``cell_mpc``)."""
    async with server.use(q.model_name(server), q.version, kind=KIND) as served, \
            observe(metrics, served) as obs:
        pipe = served.pipeline
        decoded = await read_cube(request, budget_of(served), pipe, q)
        outputs = await pipe.infer(decoded.x, deadline)
        obs.items = 1
        body = pipe.encode_response(decoded, outputs)
    return Response(orjson.dumps(body), media_type="application/json")


# ---- saliency -------------------------------------------------------------------------------
JSON_MAX_VOXELS = 1 << 15  # the whole map in JSON up to the v2 grid (16·16·128); else npy


def lightcone_explainer(served: ServedModel) -> LightconeSaliency:
    if served.saliency is None:
        raise ApiError(409, "saliency_unavailable", served.saliency_unavailable
                       or f"{served.name} v{served.version} has no saliency graph")
    return served.saliency


@router.post("/v1/lightcones:saliency", operation_id="lightcone_saliency",
             summary="Saliency map of a lightcone parameter estimate",
             openapi_extra=CUBE_BODY, responses={
                 200: json_examples(MAPS_200, examples.LIGHTCONE_SALIENCY), **error_responses(
                     400, 401, 404, 409, 411, 413, 415, 422, 429, 503, 504,
                     examples={422: examples.LIGHTCONE_422})})
async def lightcone_saliency(
    request: Request, server: ServerDep, metrics: MetricsDep, deadline: DeadlineDep,
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
    media = wants(request, out)
    params = MethodParams(method=method, samples=samples, sigma=sigma,  # type: ignore[arg-type]
                          steps=steps, baseline=baseline, seed=seed)  # type: ignore[arg-type]
    async with server.use(q.model_name(server), q.version, kind=KIND) as served, \
            observe(metrics, served, "saliency") as obs:
        pipe, budget = served.pipeline, budget_of(served)
        sal = lightcone_explainer(served)
        check_params(params)
        tgt = sal.parse_target(target)
        if media == PNG:
            check_slice(pipe.grid, slice_axis, slice_index, los_index)
        decoded = (await read_cube(request, budget, pipe, q)).first_patch()
        # rows in flight: inputs, their gradients, the expansion's own copy
        async with budget.reserve(3 * (params.rows + 2) * decoded.x.nbytes):
            res = await sal.explain(decoded.x[0], tgt, params, deadline)
        obs.items = 1
    prediction = pipe.encode_response(decoded, {k: np.asarray(v)[None]
                                                for k, v in res["outputs"].items()})
    grid = pipe.grid
    if media == NPY:
        return Response(npy_bytes(res["map"]), media_type=NPY, headers={
            "x-specula-model": served.name, "x-specula-version": str(served.version),
            "x-specula-explained": res["explained"]["target"],
            "x-specula-value": repr(res["explained"]["value"])})
    if media == PNG:
        est = prediction["parameters"][tgt.name]
        kw = {"cube_mk": decoded.x[0, 0] * grid.scale_mk, "saliency": res["map"],
              "frequencies_mhz": grid.frequencies_mhz, "cell_mpc": grid.cell_mpc,
              "explained": res["explained"], "estimate": est, "method": res["method"],
              "model": served.name, "version": served.version, "slice_axis": slice_axis,
              "slice_index": slice_index, "los_index": los_index,
              # the uploaded file's name; None (not "body") when the request gave none
              "source": request.headers.get("x-filename"),
              "true_value": prediction.get("file_parameters", {}).get(tgt.name),
              "notes": prediction.get("notes", []), "scale_mk": grid.scale_mk}
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
        raise ApiError(400, "bad_request", "slice_axis must be x or y")
    if index is not None and not 0 <= index < grid.n_xy:
        raise ApiError(400, "bad_request", f"slice_index must be in [0, {grid.n_xy})")
    if los_index is not None and not 0 <= los_index < grid.n_los:
        raise ApiError(400, "bad_request", f"los_index must be in [0, {grid.n_los})")
