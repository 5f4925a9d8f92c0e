"""Two pure-ASGI middlewares: body size limit and W3C trace context + access log.

Pure ASGI (not BaseHTTPMiddleware) so that a 413 is sent before one byte of an oversized
body is read, and so that streaming responses pass through untouched.
"""

from __future__ import annotations

import logging
import random
import re
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import trace_context

access_log = logging.getLogger("specula.access")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def error_body(code: str, detail: str) -> bytes:
    return orjson.dumps({"error": detail, "code": code})


class BodyTooLarge(Exception):
    pass


SCOPE_KEY = "specula.inflight"  # the request's InflightCharge, in its ASGI scope


class InflightCharge:
    """What one request holds of the in-flight byte budget: its declared body, plus what a
    handler reserves before decoding it (:mod:`service.api.jsonbudget`), released together
    when the request ends (after the last byte of a streamed response)."""

    __slots__ = ("held", "middleware")

    def __init__(self, middleware: BodyLimitMiddleware, declared: int) -> None:
        self.middleware = middleware
        self.held = declared
        middleware.inflight += declared

    def reserve(self, n: int) -> str | None:
        """Hold ``n`` more bytes; else why not: ``"too_large"`` when this request alone would
        pass the budget (it can never fit), ``"overloaded"`` when others in flight leave no
        room now (retry later)."""
        limit = self.middleware.max_inflight
        if self.held + n > limit:
            return "too_large"
        if self.middleware.inflight + n > limit:
            return "overloaded"
        self.held += n
        self.middleware.inflight += n
        return None

    def release(self) -> None:
        self.middleware.inflight -= self.held
        self.held = 0


class BodyLimitMiddleware:
    """Bound request bodies, one by one and all together, before any body byte is read.

    - a declared Content-Length over ``max_body_bytes``: 413; a chunked body is counted as it
      arrives and cut off with 413 when it passes the limit;
    - the declared bodies of all requests in flight may not exceed ``max_inflight_bytes``:
      a request that would pass it gets 503 + Retry-After unread. Memory for uploads stays
      bounded however many clients connect (the batcher's row bound only starts after
      decoding). A lone request is always admitted, so the two limits cannot deadlock.
      Handlers add what decoding will take (JSON: service/api/jsonbudget.py) to the
      request's :class:`InflightCharge` before they decode.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_inflight_bytes: int,
                 retry_after_s: int = 1) -> None:
        self.app = app
        self.max = max_body_bytes
        self.max_inflight = max_inflight_bytes
        self.retry_after = str(retry_after_s).encode()
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = next((int(v) for k, v in scope["headers"]
                         if k == b"content-length" and v.isdigit()), 0)
        if declared > self.max:
            return await self._reject(send, 413, "too_large", f"request body of {declared} "
                                      f"bytes exceeds the limit of {self.max} bytes "
                                      "(SPECULA_MAX_BODY_BYTES)")
        if self.inflight and self.inflight + declared > self.max_inflight:
            return await self._reject(send, 503, "overloaded", f"{self.inflight} bytes of "
                                      f"uploads in flight; retry later "
                                      "(SPECULA_MAX_INFLIGHT_BYTES)",
                                      [(b"retry-after", self.retry_after)])
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        charge = scope[SCOPE_KEY] = InflightCharge(self, declared)
        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send, 413, "too_large", f"request body passed the limit of "
                                   f"{self.max} bytes (SPECULA_MAX_BODY_BYTES)")
        finally:
            charge.release()

    async def _reject(self, send: Send, status: int, code: str, detail: str,
                      headers: list[tuple[bytes, bytes]] = ()) -> None:
        body = error_body(code, detail)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), *headers]})
        await send({"type": "http.response.body", "body": body})


class TraceMiddleware:
    """Accept ``traceparent``, open a span for this request, log one access line.

    An invalid or absent traceparent starts a new trace (as W3C Trace Context prescribes).
    The response carries ``traceparent`` with our span id so the caller can link to it.
    """

    def __init__(self, app: ASGIApp, access_log_enabled: bool = True) -> None:
        self.app = app
        self.access = access_log_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"traceparent"), b"")
        m = TRACEPARENT.match(header.decode("latin-1").strip().lower())
        # W3C ids need to be random, not secret: getrandbits avoids a urandom syscall each
        trace_id, parent_id, flags = m.groups() if m else (f"{random.getrandbits(128):032x}",
                                                           "", "01")
        span_id = f"{random.getrandbits(64):016x}"
        ctx = {"trace_id": trace_id, "span_id": span_id}
        if parent_id:
            ctx["parent_id"] = parent_id
        token = trace_context.set(ctx)
        outgoing = f"00-{trace_id}-{span_id}-{flags}".encode()
        status = 500
        t0 = time.perf_counter()

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"traceparent", outgoing)]
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        finally:
            if self.access:
                access_log.info("request", extra={
                    "method": scope["method"], "path": scope["path"], "status": status,
                    "duration_ms": round((time.perf_counter() - t0) * 1000, 3)})
            trace_context.reset(token)
