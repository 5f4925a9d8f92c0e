"""The native endpoint: files in, classifications out.

``POST /v1/spectra:classify`` takes multipart uploads (one or many FITS files, an exposure
container, JSON arrays, .npy — any format a reader in service.spectra identifies), or one file
as the raw body. Response: ``{"model", "version", "results": [one object per spectrum]}``;
with ``?stream=true`` or ``Accept: application/x-ndjson``, one JSON line per spectrum as each
file finishes, so a client sees the first results of a big upload early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from service.inference.kinds.spectrum import KIND as SPECTRUM
from service.inference.pipeline import Upload
from service.metrics import RequestStats

from .. import examples
from ..deps import DeadlineDep, MetricsDep, ServerDep, SettingsDep, observe
from ..errors import ApiError, failure_of
from ..jsonbudget import json_bytes, reserve_json
from ..multipart import parse_multipart
from ..schemas import ClassifyResponse, UploadFailure, error_responses

router = APIRouter(prefix="/v1", tags=["spectra"])
NDJSON = "application/x-ndjson"
OFFLOAD_BYTES = 4 << 20  # parse multipart bodies bigger than this on the worker pool

UPLOAD_EXAMPLE = (
    "Spectrum files as multipart parts (`curl -F files=@spec-1198-52669-0063.fits URL`), one "
    "file as the raw body (`curl --data-binary @spec-1198-52669-0063.fits -H 'X-Filename: "
    "spec-1198-52669-0063.fits' URL`), or a JSON arrays document (the example below).")
# the body is hand-declared (the handlers read it raw): at least one non-empty file, since an
# empty body or a multipart without files is answered 400 (read_uploads). parse_multipart
# keeps every file part whatever its field name; `files` (this schema's name from the start)
# and `file` (README's `curl -F file=@...`) are the two declared, so a client generated from
# the schema and one copied from the README both work
BODY_DOC = {"requestBody": {"required": True, "description": UPLOAD_EXAMPLE, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "minProperties": 1,
        "anyOf": [{"required": ["files"]}, {"required": ["file"]}], "properties": {
            "files": {"type": "array", "minItems": 1, "description": "one or many files",
                      "items": {"type": "string", "format": "binary", "minLength": 1}},
            "file": {"type": "string", "format": "binary", "minLength": 1,
                     "description": "one file (curl -F file=@...): the same as `files`"}},
        "description": "every file part is read, whatever its field name: `files` and "
                       "`file` are the two documented ones"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                            "minLength": 1}},
    "application/json": {"schema": {"type": "object", "minProperties": 1,
                                    "description": "JSON arrays reader"},
                         "examples": examples.SPECTRUM_JSON_BODY},
}}}


async def read_uploads(request: Request, max_files: int, fmt: str | None) -> list[Upload]:
    ctype = request.headers.get("content-type", "")
    body = await request.body()  # bounded by BodyLimitMiddleware before a byte is read
    if ctype.startswith("multipart/form-data"):
        if len(body) > OFFLOAD_BYTES:
            parts = await asyncio.get_running_loop().run_in_executor(
                request.app.state.server.pool, parse_multipart, body, ctype, max_files)
        else:
            parts = parse_multipart(body, ctype, max_files)
        uploads = [Upload(p.data, p.filename or p.name, p.content_type, fmt) for p in parts]
    else:
        if not body:  # the one file is empty: said as a multipart part's would be
            raise ApiError(400, "empty_file", "the body is empty (0 bytes): no file")
        name = request.headers.get("x-filename") or "body"
        uploads = [Upload(body, name, ctype or None, fmt)]
    if not uploads:
        raise ApiError(400, "bad_request", "no file in the request (multipart parts or a body)")
    reserve_json(request, sum(json_bytes(u.data) for u in uploads))  # before any is parsed
    return uploads


class ClassifyQuery(BaseModel):
    """The query of ``/v1/spectra:classify``: one model, validated the same way by FastAPI's
    route and by the hot route (service.api.hotpath)."""

    model: str | None = Field(None, description="default: SPECULA_DEFAULT_MODEL")
    version: int | None = Field(None, description="pin a version (default: latest)")
    format: str | None = Field(None, description="reader name, e.g. sdss-spec")
    stream: bool = Field(False, description="NDJSON, one line per spectrum")


# ?stream=true (or Accept: application/x-ndjson) answers 200 NDJSON: one JSON object a line.
# Its schema is the stream read as an array of its lines (OpenAPI 3.2's reading of `schema`
# for a sequential media type)
STREAM_DOC = {200: {"content": {NDJSON: {"schema": {
    "type": "array", "description": "one line per spectrum, as its file finishes",
    "items": {"anyOf": [{"$ref": "#/components/schemas/ClassifiedSpectrum"},
                        {"$ref": "#/components/schemas/SpectrumFailure"},
                        UploadFailure.model_json_schema()]}},
                            "examples": examples.CLASSIFY_STREAM},
                    "application/json": {"examples": examples.CLASSIFY}}}}


@router.post("/spectra:classify", operation_id="classify_spectra", response_model=ClassifyResponse,
             summary="Classify spectra, with redshift and uncertainty",
             openapi_extra=BODY_DOC, responses={**STREAM_DOC, **error_responses(
                 400, 401, 404, 413, 415, 422, 429, 503, 504)})
async def classify(request: Request, server: ServerDep, metrics: MetricsDep,
                   settings: SettingsDep, deadline: DeadlineDep,
                   q: Annotated[ClassifyQuery, Query()]) -> Response:
    """Spectrum files in — multipart ``files`` or ``file`` parts (any field name is read), or
    one file as the raw body (``X-Filename`` names it) — one result per spectrum out: class
    and subtype probabilities, redshift ``z`` with its 1σ ``z_sigma``, predictive entropy and
    epistemic uncertainty (nats). Formats: SDSS spec/spSpec, DESI coadd, ESO SDP, the
    exposure container, JSON arrays, .npy, gzipped or not. ``?stream=true`` or
    ``Accept: application/x-ndjson``: one JSON line per spectrum as each file finishes."""
    return await classify_request(request, q, server, metrics, settings, deadline)


async def classify_request(request: Request, q: ClassifyQuery, server, metrics, settings,
                           deadline: float | None) -> Response:
    name = q.model or settings.default_model
    if q.stream or NDJSON in request.headers.get("accept", ""):
        server.get(name, q.version, kind=SPECTRUM)  # unknown model: a 404 now, not an error line later
        uploads = await read_uploads(request, settings.max_files, q.format)
        return StreamingResponse(stream_results(server, metrics, name, q.version, uploads,
                                                deadline), media_type=NDJSON)
    async with server.use(name, q.version, kind=SPECTRUM) as served, observe(metrics, served) as obs:
        uploads = await read_uploads(request, settings.max_files, q.format)
        results = await served.pipeline.classify(uploads, deadline)
        obs.items = len(results)
    return Response(orjson.dumps({"model": served.name, "version": served.version,
                                  "results": results}), media_type="application/json")


async def stream_results(server, metrics, name: str, version: int | None,
                         uploads: list[Upload], deadline: float | None) -> AsyncIterator[bytes]:
    """NDJSON lines; the lease is held (and the request timed) until the last line."""
    t0 = time.perf_counter()
    items, outcome = 0, "success"
    async with server.use(name, version, kind=SPECTRUM) as served:
        try:
            async for item in served.pipeline.classify_stream(uploads, deadline):
                if "error" in item:
                    outcome = "bad_input"
                else:
                    items += 1
                yield orjson.dumps(item) + b"\n"
        except BaseException as exc:
            outcome = failure_of(exc).outcome
            raise
        finally:
            metrics.record(RequestStats(served.name, str(served.version), outcome,
                                        time.perf_counter() - t0, items))
