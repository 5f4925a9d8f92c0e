"""SIGTERM: refuse new work cleanly, drain what is in flight, exit within the limit.

uvicorn's own shutdown closed the listening socket first — connections still in the kernel's
accept queue, and accepted ones whose request was not read yet, were reset ("connection reset
by peer" for 43 of 1,702 short-lived connections) — then waited SPECULA_GRACEFUL_SHUTDOWN_S
and cancelled whatever was left: those requests got a plain-text 500 (a CancelledError in the
log), and draining the batchers afterwards waited for the running batches, 1.5 s past the
limit with lightcone saliency. :class:`DrainingServer` replaces that shutdown, counting from
the signal:

1. every new request is answered 503 ``shutting_down`` with Retry-After and
   ``Connection: close`` (:class:`DrainMiddleware`), unread;
2. stop accepting: the connections the kernel has already queued on the listening sockets are
   accepted and served (so answered that 503, not reset), and the sockets closed in the same
   step — later connection attempts are refused by the kernel, which a client may retry;
3. after a moment for those connections' requests to arrive, idle keep-alive connections are
   closed and busy ones close after their response;
4. requests in flight run on until ``CUT_MARGIN_S`` (0.5 s, a quarter of the limit when that
   is shorter) before the limit; those still running then are answered 503 ``shutting_down``
   with Retry-After — their work is dropped, a retry elsewhere is safe;
5. the batchers drain (the lifespan's shutdown) in what is left of the limit; batches still
   running then are abandoned and the process exits on time.

The middleware and the server share a :class:`Drain` through the ASGI lifespan state (the
app's lifespan yields it under ``DRAIN_STATE``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .middleware import error_body

log = logging.getLogger("specula.api")

DRAIN_STATE = "specula.drain"
CUT_MARGIN_S = 0.5  # time left, at the cut, to answer the cut requests and stop the batchers
GRACE_S = 0.1  # for requests on connections accepted just before the signal to arrive
POLL_S = 0.01


class Drain:
    """Shutdown state shared by the server (which starts and cuts the drain) and
    :class:`DrainMiddleware` (which answers accordingly)."""

    def __init__(self) -> None:
        self.draining = False
        self.cut = False
        self.requests: set[asyncio.Task] = set()

    def cut_off(self) -> int:
        """The drain's time is up: cancel every request still running (the middleware answers
        each 503); how many there were."""
        self.cut = True
        for task in self.requests:
            task.cancel()
        return len(self.requests)


class DrainMiddleware:
    """Pure ASGI: 503 ``shutting_down`` for a request that starts while draining, and for one
    the drain cuts off before its response started."""

    def __init__(self, app: ASGIApp, drain: Drain, retry_after_s: int = 1) -> None:
        self.app = app
        self.drain = drain
        self.retry_after = str(retry_after_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.drain.draining:
            return await self.refuse(send)
        task = asyncio.current_task()
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.drain.requests.add(task)
        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not self.drain.cut or started:
                raise
            task.uncancel()  # our own cut: answer instead of dying
            await self.refuse(send)
        finally:
            self.drain.requests.discard(task)

    async def refuse(self, send: Send) -> None:
        body = error_body("shutting_down", "the server is shutting down; retry (another "
                          "instance will answer)")
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"retry-after", self.retry_after), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def accept_queued(listener) -> list[socket.socket]:
    """Every connection waiting in a listening socket's accept queue, without blocking (on a
    duplicate of its descriptor: the event loop's socket objects do not all offer accept)."""
    queued = []
    with socket.socket(fileno=os.dup(listener.fileno())) as dup:
        dup.setblocking(False)
        while True:
            try:
                conn, _ = dup.accept()
            except OSError:  # BlockingIOError: the queue is empty
                return queued
            queued.append(conn)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the shutdown described above (single process and each worker)."""

    signalled_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.signalled_at is None:  # the limit counts from the signal, not the next tick
            self.signalled_at = time.monotonic()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        limit = self.config.timeout_graceful_shutdown
        drain = self.lifespan.state.get(DRAIN_STATE)
        if limit is None or drain is None:  # no limit to keep, or not Specula's app
            return await super().shutdown(sockets)
        end = (self.signalled_at or time.monotonic()) + limit
        margin = min(CUT_MARGIN_S, limit / 4)
        log.info("shutting down: refusing new requests, draining those in flight",
                 extra={"limit_s": limit, "in_flight": len(drain.requests)})
        drain.draining = True
        await self.serve_accepted(self.stop_accepting(sockets))
        await asyncio.sleep(min(GRACE_S, margin))
        for connection in list(self.server_state.connections):
            connection.shutdown()
        if not await self.settled(end - margin):
            log.warning("graceful shutdown limit: answering %d request(s) still in flight "
                        "503 shutting_down", drain.cut_off())
            await self.settled(end - margin / 2)
        for task in self.server_state.tasks:  # uvicorn's last resort; none expected
            task.cancel(msg="graceful shutdown limit reached")
        if not self.force_exit:
            await self.stop_app(end)

    def stop_accepting(self, sockets: list[socket.socket] | None) -> list[socket.socket]:
        """Take the connections the kernel queued, then close the listeners — no await in
        between, so none is left in a queue that is closed under it (which resets it)."""
        queued = []
        for server in self.servers:
            for listener in server.sockets:
                queued += accept_queued(listener)
            server.close()
        for sock in sockets or []:  # a worker's inherited socket (the supervisor closed its own)
            sock.close()
        return queued

    async def serve_accepted(self, conns: list[socket.socket]) -> None:
        """Serve connections taken from the accept queue as uvicorn serves any other (their
        requests get DrainMiddleware's 503)."""
        loop = asyncio.get_running_loop()
        factory = functools.partial(self.config.http_protocol_class, config=self.config,
                                    server_state=self.server_state,
                                    app_state=self.lifespan.state)
        for result in await asyncio.gather(
                *(loop.connect_accepted_socket(factory, sock=conn) for conn in conns),
                return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("a queued connection could not be served: %s", result)

    async def settled(self, until: float) -> bool:
        """Wait until no request runs and no connection is open, or ``until``; settled?"""
        state = self.server_state
        while state.tasks or state.connections:
            if self.force_exit or time.monotonic() >= until:
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def stop_app(self, end: float) -> None:
        """The lifespan's shutdown (the batchers drain) in the time left; running batches
        past it are abandoned: their requests were answered already."""
        try:
            async with asyncio.timeout(max(0.0, end - time.monotonic())):
                await self.lifespan.shutdown()
        except TimeoutError:
            log.error("graceful shutdown limit reached with batches still running; exiting "
                      "without waiting for them")
