"""Two pure-ASGI middlewares: body size limit and W3C trace context + access log.

Pure ASGI (not BaseHTTPMiddleware) so that a 413 is sent before one byte of an oversized
body is read, and so that streaming responses pass through untouched.
"""

from __future__ import annotations

import logging
import re
import secrets
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


class BodyLimitMiddleware:
    """413 for a declared Content-Length over the limit; count chunked bodies as they come."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max:
                return await self._reject(send, int(value))
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

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send, seen)

    async def _reject(self, send: Send, size: int) -> None:
        body = error_body("too_large", f"request body of {size}+ bytes exceeds the limit of "
                          f"{self.max} bytes (SPECULA_MAX_BODY_BYTES)")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
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
        trace_id, parent_id, flags = m.groups() if m else (secrets.token_hex(16), "", "01")
        span_id = secrets.token_hex(8)
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
