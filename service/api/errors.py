"""Every failure → an Open Inference Protocol error body ``{"error": msg, "code": code}``.

One table maps exception types to (HTTP status, machine-readable code, metrics outcome), so
the status a client sees and the outcome Prometheus counts cannot drift apart. Bad input is
always a 4xx; a 500 means a bug in the service, never a bad file.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import compile_path

from service.inference.batcher import (
    BatcherClosed,
    BatcherError,
    DeadlineExceeded,
    QueueFull,
    RequestTooLarge,
)
from service.inference.repository import ModelError
from service.inference.runner import InferenceError
from service.inference.saliency import SaliencyError
from service.io.errors import InputError
from service.metrics import Outcome

from .middleware import BodyTooLarge

log = logging.getLogger("specula.api")

# every kind's input errors (SpectrumError, LightconeError): every other code is a 422
INPUT_STATUS = {"too_large": 413, "decompression_bomb": 413, "unknown_format": 415,
                "bad_request": 400, "empty_file": 400}
# a saliency request that cannot be served: every other code (bad_request, bad_target,
# bad_layer) is a 400
SALIENCY_STATUS = {"too_many_spectra": 413, "introspection_unavailable": 409}
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


class ApiError(Exception):
    """An error raised by the API layer itself (bad header, bad tensor, auth)."""

    def __init__(self, status: int, code: str, detail: str, *, source: str | None = None,
                 headers: dict[str, str] | None = None):
        self.status, self.code, self.detail, self.source = status, code, detail, source
        self.headers = headers or {}
        super().__init__(detail)


@dataclass(frozen=True)
class Failure:
    status: int
    code: str
    detail: str
    outcome: Outcome
    source: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        body = {"error": self.detail, "code": self.code}
        if self.source:
            body["source"] = self.source
        return Response(orjson.dumps(body), status_code=self.status, headers=self.headers,
                        media_type="application/json")


def failure_of(exc: BaseException, *, queue_full_status: int = 429, retry_after_s: int = 1
               ) -> Failure:
    retry = {"Retry-After": str(retry_after_s)}
    match exc:
        case InputError():
            return Failure(INPUT_STATUS.get(exc.code, 422), exc.code, exc.detail,
                           "bad_input", exc.source)
        case ApiError():
            # 503 is "not now" (the in-flight budget is full), as a full queue is: rejected
            outcome: Outcome = ("bad_input" if exc.status < 500
                                else "rejected" if exc.status == 503 else "error")
            return Failure(exc.status, exc.code, exc.detail, outcome, exc.source,
                           headers=exc.headers)
        case SaliencyError():
            return Failure(SALIENCY_STATUS.get(exc.code, 400), exc.code, exc.detail,
                           "bad_input")
        case QueueFull():
            return Failure(queue_full_status, exc.code, str(exc), "rejected", headers=retry)
        case RequestTooLarge():
            return Failure(413, exc.code, str(exc), "rejected")
        case DeadlineExceeded():
            return Failure(504, exc.code, str(exc), "timeout")
        case BatcherClosed() | BatcherError():
            return Failure(503, exc.code, str(exc), "rejected", headers=retry)
        case ModelError(code="model_not_found"):
            return Failure(404, exc.code, exc.detail, "bad_input")
        case ModelError():
            return Failure(503, exc.code, exc.detail, "error")
        case RequestValidationError():
            errs = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}"
                             for e in exc.errors())
            return Failure(400, "bad_request", errs or "invalid request", "bad_input")
        case StarletteHTTPException():
            return Failure(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"),
                           str(exc.detail), "bad_input", headers=dict(exc.headers or {}))
        case BodyTooLarge():
            return Failure(413, "too_large", "request body exceeds the limit", "bad_input")
        case asyncio.CancelledError() | ClientDisconnect():
            return Failure(499, "cancelled", "the client went away", "error")
        case InferenceError():  # the runtime failed on this request's batch
            return Failure(500, "inference_failed", "ONNX Runtime failed on this request's "
                           f"batch: {str(exc)[:500]}", "error")
    return Failure(500, "internal", f"{type(exc).__name__}: internal error", "error")


def error_response(exc: BaseException, settings) -> Response:
    """The response for any exception a handler raised: FastAPI's handlers and the hot routes
    (service.api.hotpath) both answer through this, so they cannot drift apart."""
    failure = failure_of(exc, queue_full_status=settings.queue_full_status,
                         retry_after_s=settings.retry_after_s)
    if failure.status >= 500 and failure.code in ("internal", "inference_failed"):
        log.error("unhandled error", exc_info=exc)
    return failure.response()


def allowed_methods(request: Request, named: str) -> str:
    """Every method some route serves at this request's path. The router's 405 names only
    the methods of the first route whose path matched (``named``), so ``Allow: GET`` hid
    ``POST /v1/spectra:introspect`` (RFC 9110: Allow lists every method the resource has).
    Walked per 405 only: a client's mistake, rare enough not to cache for."""
    methods = {m.strip() for m in named.split(",") if m.strip()}
    for route in iter_route_contexts(request.app.routes):  # the routes of included routers
        if route.path and route.methods and compile_path(route.path)[0].fullmatch(
                request.scope["path"]):
            methods |= route.methods
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    settings = app.state.settings

    async def handle(request: Request, exc: Exception) -> Response:
        return error_response(exc, settings)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        response = error_response(exc, settings)
        response.headers["Allow"] = allowed_methods(request, response.headers.get("allow", ""))
        return response

    app.add_exception_handler(405, method_not_allowed)

    # a handler for a specific class answers and keeps the connection; the one for Exception
    # is Starlette's last resort, which answers and then re-raises (the connection drops)
    for exc_type in (InputError, ApiError, SaliencyError, BatcherError, ModelError,
                     InferenceError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_type, handle)
