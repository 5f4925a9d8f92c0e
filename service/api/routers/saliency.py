"""Why did the model say that: saliency maps and the network's own filters and activations.

``POST /v1/spectra:saliency`` takes the same bodies as ``/v1/spectra:classify`` (multipart
files, or one file / JSON arrays as the body) and returns, per spectrum, the map on the
model's wavelength grid, the prediction it explains and the model version. ``Accept``:
``application/json`` (arrays; default), ``application/x-npy`` (the maps, float32
[N, 2, npix]) or ``image/png`` (the slide figure of one spectrum: ``index`` picks it).

``GET /v1/spectra:introspect`` returns the first-layer filters; ``POST`` with a spectrum and
``layer`` returns that layer's activations too (JSON arrays or a PNG grid). Both come out of
``introspect.onnx`` on the server: no weight file is ever handed to a client.

A model without a (servable) saliency graph answers 409 ``saliency_unavailable``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Query, Request, Response

from service.inference.kinds.spectrum import KIND as SPECTRUM
from service.inference.saliency import (
    AUTO_TARGET_DOC,
    MAX_ROWS_PER_SPECTRUM,
    Method,
    MethodParams,
    SaliencyPipeline,
    Scale,
)
from service.inference.serving import ServedModel

from .. import examples
from ..deps import DeadlineDep, MetricsDep, ServerDep, SettingsDep, observe
from ..errors import ApiError
from ..media import FIGURES_200, JSON, MAPS_200, NPY, PNG, npy_bytes, wants
from ..plots import activations_figure, filters_figure, png, spectrum_figure
from ..schemas import error_responses, json_examples
from .spectra import BODY_DOC, read_uploads

router = APIRouter(prefix="/v1", tags=["saliency"])
MAX_SPECTRA = 64  # per saliency request (each costs 2-64 forward passes)
ERRORS = error_responses(400, 401, 404, 409, 413, 415, 422, 429, 503, 504)


def explainer(served: ServedModel) -> SaliencyPipeline:
    if served.saliency is None:
        raise ApiError(409, "saliency_unavailable", served.saliency_unavailable
                       or f"{served.name} v{served.version} has no saliency graph")
    return served.saliency


SALIENCY_DOC = (
    "Which pixels drove a prediction: per spectrum, the map on the model's wavelength grid "
    "(flux and inverse-variance channels), the prediction it explains and the model version. "
    "Same bodies as `/v1/spectra:classify`; `Accept` application/json (default), "
    "application/x-npy (the maps, float32 [N, 2, npix]) or image/png (one spectrum's figure, "
    "`index` picks it).\n\n"
    "**Default target** (`target=auto`): the decision the model is least sure of, since the "
    "gradient of a saturated probability is ~0 and explains nothing. " + AUTO_TARGET_DOC
    + " The answer's `explained.target` says what was explained, `explained.asked` what was "
    "asked; an explicit target (`top`, a class, a label, `redshift`) is always explained as "
    "asked.")


@router.post("/spectra:saliency", operation_id="spectra_saliency", openapi_extra=BODY_DOC,
             summary="Saliency maps of spectrum classifications", description=SALIENCY_DOC,
             responses={200: json_examples(MAPS_200, examples.SPECTRA_SALIENCY), **ERRORS})
async def saliency(
    request: Request, server: ServerDep, metrics: MetricsDep, settings: SettingsDep,
    deadline: DeadlineDep,
    target: Annotated[str, Query(description="a label (STAR:A), a top class (QSO), 'top' "
                                 "(the predicted class), 'redshift', or 'auto' (default): "
                                 + AUTO_TARGET_DOC)] = "auto",
    method: Annotated[Method, Query(description="the attribution method")] = "gradient",
    scale: Annotated[Scale | None, Query(description="probability (default) | "
                                         "log_probability | logit; 'value' for redshift")]
    = None,
    samples: Annotated[int, Query(ge=1, le=MAX_ROWS_PER_SPECTRUM,
                                  description="smoothgrad: noisy copies n")] = 5,
    sigma: Annotated[float, Query(ge=0.0, le=5.0,
                                  description="smoothgrad: noise σ / robust flux range")] = 0.2,
    steps: Annotated[int, Query(ge=1, le=MAX_ROWS_PER_SPECTRUM,
                                description="integrated gradients: path steps m")] = 32,
    baseline: Annotated[Literal["zeros", "continuum"],
                        Query(description="integrated gradients: the path's start")] = "zeros",
    seed: Annotated[int, Query(description="smoothgrad noise seed")] = 0,
    index: Annotated[int | None, Query(ge=0, description="explain only this spectrum of the "
                                       "request (0-based, across files)")] = None,
    model: Annotated[str | None, Query(description="default: SPECULA_DEFAULT_MODEL")] = None,
    version: Annotated[int | None, Query(description="pin a version (default: latest)")] = None,
    format: Annotated[str | None, Query(description="reader name, e.g. sdss-spec")] = None,
    out: Annotated[str | None, Query(description="json | npy | png (overrides Accept)")] = None,
) -> Response:
    """Which pixels drove a prediction (the operation's description is SALIENCY_DOC)."""
    media = wants(request, out)
    if baseline not in ("zeros", "continuum"):
        raise ApiError(400, "bad_request", "baseline must be zeros or continuum")
    params = MethodParams(method=method, samples=samples, sigma=sigma,  # type: ignore[arg-type]
                          steps=steps, baseline=baseline, seed=seed)  # type: ignore[arg-type]
    name = model or settings.default_model
    async with server.use(name, version, kind=SPECTRUM) as served, observe(metrics, served, "saliency") as m:
        sal = explainer(served)
        params.check()
        tgt = sal.parse_target(target, scale)
        uploads = await read_uploads(request, settings.max_files, format)
        if media == PNG and index is None:
            index = 0
        results = await sal.explain_upload(uploads, tgt, params, deadline, MAX_SPECTRA, index)
        m.items = sum("error" not in r for r in results)
        if media == PNG:
            return Response(await render(served, sal, results[0]), media_type=PNG)
        if media == NPY:
            maps = np.stack([r["map"] if "error" not in r else
                             np.full((2, sal.grid.npix), np.nan, np.float32) for r in results])
            return Response(npy_bytes(maps), media_type=NPY, headers={
                "x-specula-model": served.name, "x-specula-version": str(served.version),
                "x-specula-explained": ",".join(r.get("explained", {}).get("target", "")
                                                for r in results)})
        body = {"model": served.name, "version": served.version,
                "wavelength": sal.grid.wavelength.astype(np.float32).tolist(),
                "results": [encode(r) for r in results]}
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type=JSON)


def encode(r: dict[str, Any]) -> dict[str, Any]:
    base = {"object_id": r["object_id"], "source": r["source"]}
    if "error" in r:
        return {**base, "error": r["error"]}
    return {**base, "prediction": r["prediction"], "explained": r["explained"],
            "method": r["method"], "warnings": r["prepared"].warnings(),
            "saliency": {"flux": r["map"][0], "weight": r["map"][1]}}


async def render(served: ServedModel, sal: SaliencyPipeline, r: dict[str, Any]) -> bytes:
    if "error" in r:
        raise ApiError(422, r["error"]["code"], r["error"]["detail"], source=r["source"])
    # "body" is read_uploads' name for a raw body sent without X-Filename: not a file name
    kw = {"saliency": r["map"][0], "grid_wavelength": sal.grid.wavelength,
          "prediction": r["prediction"], "explained": r["explained"], "method": r["method"],
          "model": served.name, "version": served.version,
          "source": None if r["source"] == "body" else r["source"]}
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: png(spectrum_figure(r["spectrum"], **kw)))


@router.get("/spectra:introspect", operation_id="spectra_filters",
            summary="First-layer filters of a spectrum model",
            responses={200: json_examples(FIGURES_200, examples.SPECTRA_FILTERS),
                       **error_responses(400, 401, 404, 409, 429, 503, 504)})
async def filters(
    request: Request, server: ServerDep, metrics: MetricsDep, settings: SettingsDep,
    deadline: DeadlineDep,
    model: Annotated[str | None, Query()] = None,
    version: Annotated[int | None, Query()] = None,
    out: Annotated[str | None, Query(description="json | png (overrides Accept)")] = None,
) -> Response:
    """The first-layer convolution filters, shape (members, channels, 2, k), as JSON arrays
    or a PNG grid; read from the model's ``introspect.onnx``, never a weight file."""
    async with server.use(model or settings.default_model, version, kind=SPECTRUM) as served, \
            observe(metrics, served, "introspect"):
        sal = explainer(served)
        w = await sal.filters(deadline)
        if wants(request, out) == PNG:
            figure = await asyncio.get_running_loop().run_in_executor(
                None, filters_figure, w, served.name, served.version)
            return Response(figure, media_type=PNG)
        return Response(orjson.dumps({"model": served.name, "version": served.version,
                                      "layers": sal.layers, "filters": w},
                                     option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON)


@router.post("/spectra:introspect", operation_id="spectra_activations", openapi_extra=BODY_DOC,
             summary="Layer activations for one spectrum",
             responses={200: json_examples(FIGURES_200, examples.SPECTRA_ACTIVATIONS), **ERRORS})
async def activations(
    request: Request, server: ServerDep, metrics: MetricsDep, settings: SettingsDep,
    deadline: DeadlineDep,
    layer: Annotated[str, Query(description="stem, block1, ... (see GET)")] = "stem",
    index: Annotated[int, Query(ge=0, description="which spectrum of the request")] = 0,
    model: Annotated[str | None, Query()] = None,
    version: Annotated[int | None, Query()] = None,
    format: Annotated[str | None, Query(description="reader name")] = None,
    out: Annotated[str | None, Query(description="json | png (overrides Accept)")] = None,
) -> Response:
    """One layer's activations, shape (members, channels, length), for one spectrum of the
    upload (``index``), plus the first-layer filters; JSON arrays or a PNG grid."""
    loop = asyncio.get_running_loop()
    async with server.use(model or settings.default_model, version, kind=SPECTRUM) as served, \
            observe(metrics, served, "introspect") as m:
        sal = explainer(served)
        uploads = await read_uploads(request, settings.max_files, format)
        spectra = [s for u in uploads for s in
                   await loop.run_in_executor(served.pipeline.pool,
                                              served.pipeline.decode_request, u)]
        if not 0 <= index < len(spectra):
            raise ApiError(400, "bad_request", f"index {index} out of range "
                           f"({len(spectra)} spectra)")
        prep = (await loop.run_in_executor(served.pipeline.pool, served.pipeline.preprocess,
                                           [spectra[index]]))[0]
        if isinstance(prep, Exception):
            raise prep
        res = await sal.activations(prep.x, layer, deadline)
        m.items = 1
        if wants(request, out) == PNG:
            figure = await loop.run_in_executor(None, activations_figure, res["activations"],
                                                layer, sal.grid.wavelength, served.name,
                                                served.version)
            return Response(figure, media_type=PNG)
        return Response(orjson.dumps({"model": served.name, "version": served.version,
                                      "object_id": spectra[index].object_id, "layer": layer,
                                      "activations": res["activations"],
                                      "filters": res["filters"]},
                                     option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON)
