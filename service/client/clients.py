"""``SpeculaClient`` (blocking) and ``AsyncSpeculaClient`` (asyncio) over httpx.

Both are the operations of ``core.ClientCore`` run by a different loop: ``_drive`` sends each
:class:`Call` with httpx and sleeps each :class:`Pause`, with ``time.sleep`` or
``asyncio.sleep``. Nothing else differs, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import httpx

from .core import ClientCore
from .protocol import Call, Pause, RetryPolicy, Step

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def _blocking(op: Callable[Concatenate[Any, P], Generator[Step, Any, T]]
              ) -> Callable[Concatenate[SpeculaClient, P], T]:
    @functools.wraps(op)
    def method(self: SpeculaClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._drive(op(self, *args, **kwargs))
    return method


def _awaitable(op: Callable[Concatenate[Any, P], Generator[Step, Any, T]]
               ) -> Callable[Concatenate[AsyncSpeculaClient, P], Coroutine[Any, Any, T]]:
    @functools.wraps(op)
    async def method(self: AsyncSpeculaClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._drive(op(self, *args, **kwargs))
    return method


class SpeculaClient(ClientCore):
    """Blocking client. ``url`` is the service's root (``http://host:8000``); ``api_key`` is
    sent as ``X-API-Key`` (default: ``$SPECULA_API_KEY``); ``retry`` bounds the retries of
    429/503 (honouring ``Retry-After``); ``timeout`` is httpx's, per request; ``deadline_ms``
    asks the service to give up (504) after that long. Use as a context manager, or call
    ``close()``."""

    def __init__(self, url: str, *, api_key: str | None = None,
                 retry: RetryPolicy | None = None, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 deadline_ms: int | None = None, http: httpx.Client | None = None) -> None:
        super().__init__(url, api_key, retry, deadline_ms)
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout)

    def _drive(self, op: Generator[Step, Any, T]) -> T:
        reply: Any = None
        try:
            while True:
                step = op.send(reply)
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    reply = None
                else:
                    assert isinstance(step, Call)
                    reply = self._http.send(step.build(self._http))
        except StopIteration as done:
            return done.value

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    ready = _blocking(ClientCore.ready)
    classify = _blocking(ClientCore.classify)
    saliency = _blocking(ClientCore.saliency)
    infer_lightcone = _blocking(ClientCore.infer_lightcone)


class AsyncSpeculaClient(ClientCore):
    """The asyncio client: the same methods as :class:`SpeculaClient`, awaited."""

    def __init__(self, url: str, *, api_key: str | None = None,
                 retry: RetryPolicy | None = None, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 deadline_ms: int | None = None, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(url, api_key, retry, deadline_ms)
        self._http = http or httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def _drive(self, op: Generator[Step, Any, T]) -> T:
        reply: Any = None
        try:
            while True:
                step = op.send(reply)
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    reply = None
                else:
                    assert isinstance(step, Call)
                    reply = await self._http.send(step.build(self._http))
        except StopIteration as done:
            return done.value

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    ready = _awaitable(ClientCore.ready)
    classify = _awaitable(ClientCore.classify)
    saliency = _awaitable(ClientCore.saliency)
    infer_lightcone = _awaitable(ClientCore.infer_lightcone)
