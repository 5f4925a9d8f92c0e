"""The high-rate inference routes, answered ahead of FastAPI's router.

At a thousand single-spectrum requests a second the event loop, not ONNX Runtime, is the
bottleneck of a small CPU box (py-spy, bench/bench_service.py), and most of its time per
request went to FastAPI's machinery rather than to the request: route matching over every
route, dependency solving and the per-route exception stack cost ~300 µs of the ~410 µs an
OIP infer took in-process (profiled; the handler itself ~100 µs). So the two routes a survey
pipeline calls in bulk — OIP ``infer`` and ``/v1/spectra:classify`` — are matched here by one
regex and handed to *the same handler functions* FastAPI's routes call, with the same query
model, deadline, API-key check and error mapping (errors.error_response). The FastAPI routes
stay declared: they are the OpenAPI schema, and they answer whatever this layer passes on
(another method, a path it does not know). Body limits, trace context and the access log are
middlewares outside this one, so they apply to both.

Overload is refused here, from the headers alone: when the named model's queue has no room
for one more row, the request is answered 429 (SPECULA_QUEUE_FULL_STATUS) or, while the
batcher drains, 503 — with Retry-After — before one byte of its body is read or decoded
(uvicorn discards the unread body and keeps the connection). Refused after decoding, as
before, a rejection cost about what serving did: with a 64-row queue OIP throughput fell from
1,558 to 621 answered requests/s when clients went from 64 to 256, the loop busy reading and
parsing 2,588 bodies/s only to reject them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.inference.batcher import BatcherError
from service.inference.kinds.spectrum import KIND as SPECTRUM
from service.inference.repository import ModelError
from service.inference.serving import ServedModel
from service.metrics import RequestStats

from .deps import get_deadline, require_api_key
from .errors import error_response
from .routers.oip import oip_infer
from .routers.spectra import ClassifyQuery, classify_request

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


VERSION = TypeAdapter(int)  # the path's {version}, parsed as FastAPI's route parses it


def located(exc: ValidationError, *where: str) -> RequestValidationError:
    """pydantic's errors located as FastAPI locates them (``query.version``)."""
    return RequestValidationError([{**e, "loc": (*where, *e["loc"])} for e in exc.errors()])


async def classify(request: Request, path: dict[str, str]) -> Response:
    state = request.app.state
    try:
        q = ClassifyQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise located(exc, "query") from None
    return await classify_request(request, q, state.server, state.metrics, state.settings,
                                  await get_deadline(request))


async def infer(request: Request, path: dict[str, str]) -> Response:
    state = request.app.state
    version = None
    if "version" in path:
        try:
            version = VERSION.validate_python(path["version"])
        except ValidationError as exc:
            raise located(exc, "path", "version") from None
    return await oip_infer(path["name"], version, request, state.server, state.metrics,
                           await get_deadline(request))


def named_model(request: Request, path: dict[str, str]) -> ServedModel | None:
    """The served version an infer path names, of any kind; None when it names none (the
    handler then answers why)."""
    try:
        version = VERSION.validate_python(path["version"]) if "version" in path else None
        return request.app.state.server.get(path["name"], version)
    except (ValidationError, ModelError):
        return None


def classify_model(request: Request, path: dict[str, str]) -> ServedModel | None:
    """The served spectrum model ``/v1/spectra:classify`` will use; None as for
    named_model."""
    state = request.app.state
    query = request.query_params
    try:
        version = VERSION.validate_python(query["version"]) if "version" in query else None
        return state.server.get(query.get("model") or state.settings.default_model, version,
                                kind=SPECTRUM)
    except (ValidationError, ModelError):
        return None


def admit(request: Request, served: ServedModel | None, t0: float) -> None:
    """Raise QueueFull/BatcherClosed, counted as a rejected request, when ``served``'s queue
    has no room for one row — from the headers, before the body is read."""
    if served is None:
        return
    try:
        served.pipeline.batcher.check_room(1)
    except BatcherError:
        request.app.state.metrics.record(RequestStats(
            served.name, str(served.version), "rejected", time.perf_counter() - t0))
        raise


MODEL_OF: dict[Handler, Callable[[Request, dict[str, str]], ServedModel | None]] = {
    infer: named_model, classify: classify_model}

ROUTES: list[tuple[re.Pattern[str], Handler]] = [
    (re.compile(r"/v2/models/(?P<name>[^/]+)/infer"), infer),
    (re.compile(r"/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/infer"), infer),
    (re.compile(r"/v1/spectra:classify"), classify),
]


class HotRoutes:
    """Pure ASGI: a POST to one of ROUTES is answered here; anything else goes on to FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for pattern, handler in ROUTES:
                m = pattern.fullmatch(scope["path"])
                if m:
                    return await self.answer(handler, m.groupdict(), scope, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    async def answer(handler: Handler, path: dict[str, str], scope: Scope, receive: Receive,
                     send: Send) -> None:
        t0 = time.perf_counter()
        request = Request(scope, receive, send)
        state = request.app.state
        try:
            if state.api_keys:
                await require_api_key(request)
            admit(request, MODEL_OF[handler](request, path), t0)
            response = await handler(request, path)
        except Exception as exc:  # noqa: BLE001 — every failure becomes its mapped response
            response = error_response(exc, state.settings)
        await response(scope, receive, send)
