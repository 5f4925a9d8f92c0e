"""The timeout header as a timer on the whole request.

A request that sends ``x-specula-timeout-ms`` (SPECULA_DEADLINE_HEADER) is answered 504
``deadline_exceeded`` at its deadline wherever it is waiting: for the rest of its body, for a
decoding thread of the pool, for the lightcone byte budget, in the batcher's queue. Checking
the deadline only at the steps that look at it (the batcher, the start of decoding) let a
request with a 1 ms deadline wait behind a whole decode queue first: under mixed load at
c=256 the 504s came at p99 0.2–0.5 s and at worst 4.2 s.

The timer is the event loop's (:class:`RequestTimer`), so a 504 comes at the deadline plus
however late the loop runs its timers (a few ms, more on a saturated loop), never later than the
request's next await. It is disarmed when the response starts: a streamed answer that has begun
is not cut off. Work already handed to a thread (a decode, an ONNX Runtime batch) finishes
there unused; rows still queued leave the batcher at once (service.inference.batcher).

An invalid header value sets no timer: the handler answers it 400 (deps.get_deadline).
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.inference.batcher import DeadlineExceeded
from service.metrics import Outcome

from .errors import failure_of

# the deadline (time.monotonic()) of the request this task serves, for deps.get_deadline and
# observe(): one value for the timer, the batcher and the metrics
REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("specula_request_deadline",
                                                        default=None)
# the timer of the request this task serves: whether *it* cancelled the task is a fact it
# records, not something to re-derive from the clock (libuv's loop clock runs in whole
# milliseconds, so the timer may fire a fraction of a millisecond before time.monotonic()
# reaches the deadline, and such a timeout was counted as an error)
REQUEST_TIMER: ContextVar["RequestTimer | None"] = ContextVar("specula_request_timer",
                                                              default=None)


def header_deadline(scope: Scope, header: bytes) -> float | None:
    """The absolute deadline the header asks for; None when absent or not a positive number
    (the handler then answers 400 with the reason)."""
    for key, value in scope["headers"]:
        if key == header:
            try:
                ms = float(value)
            except ValueError:
                return None
            return time.monotonic() + ms / 1000.0 if ms > 0 else None
    return None


def cancelled_by_deadline() -> bool:
    timer = REQUEST_TIMER.get()
    return timer is not None and timer.expired


def outcome_of(exc: BaseException) -> Outcome:
    """The metrics outcome of a failed request: a cancellation by the deadline timer is a
    timeout, as the batcher's own DeadlineExceeded is, not a client that went away."""
    if isinstance(exc, asyncio.CancelledError) and cancelled_by_deadline():
        return "timeout"
    return failure_of(exc).outcome


class RequestTimer:
    """Cancels the request's task at its deadline, unless its response has started by then.

    A plain loop timer rather than ``asyncio.timeout``: the response may start in the same
    loop turn as the deadline passes, and a started answer must go out, not be cut off."""

    def __init__(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.started = self.expired = False
        # the loop's clock need not be time.monotonic()'s (uvloop's is libuv's): convert
        self.handle = loop.call_at(loop.time() + deadline - time.monotonic(), self.expire)

    def expire(self) -> None:
        if not self.started:
            self.expired = True
            self.task.cancel()

    def answered(self) -> None:
        self.started = True
        self.handle.cancel()


class DeadlineMiddleware:
    """Pure ASGI: run the request under its deadline; 504 when it passes before the answer
    starts."""

    def __init__(self, app: ASGIApp, header: str) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        deadline = header_deadline(scope, self.header) if scope["type"] == "http" else None
        if deadline is None:
            return await self.app(scope, receive, send)
        token = REQUEST_DEADLINE.set(deadline)
        timer = RequestTimer(deadline)
        timer_token = REQUEST_TIMER.set(timer)
        try:
            await self.timed(timer, deadline, scope, receive, send)
        finally:
            REQUEST_TIMER.reset(timer_token)
            REQUEST_DEADLINE.reset(token)

    async def timed(self, timer: RequestTimer, deadline: float, scope: Scope, receive: Receive,
                    send: Send) -> None:

        async def disarming_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                timer.answered()
            await send(message)

        try:
            await self.app(scope, receive, disarming_send)
        except asyncio.CancelledError:
            if not timer.expired:  # the client went away, or the shutdown cut it off
                raise
            timer.task.uncancel()  # our own timer: answer instead of dying
            late = max(0.0, time.monotonic() - deadline)
            response = failure_of(DeadlineExceeded(
                f"deadline passed {late:.3f}s ago, before the answer")).response()
            await response(scope, receive, send)
        finally:
            timer.handle.cancel()
