"""Dependencies as ``Annotated`` aliases: what a route needs, named by what it is.

All are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in a
worker thread, a thread hop per dependency per request.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from service.inference.serving import ModelServer, ServedModel
from service.metrics import Metrics, RequestStats
from service.settings import Settings

from .deadlines import REQUEST_DEADLINE, outcome_of
from .errors import ApiError


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_server(request: Request) -> ModelServer:
    return request.app.state.server


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_deadline(request: Request) -> float | None:
    """Absolute ``time.monotonic()`` deadline from the timeout header (ms), if sent: the one
    the deadline timer runs on (deadlines.DeadlineMiddleware), so both fire together."""
    raw = request.headers.get(request.app.state.settings.deadline_header)
    if raw is None:
        return None
    timed = REQUEST_DEADLINE.get()
    if timed is not None:
        return timed
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not ms > 0:
        raise ApiError(400, "bad_request", f"{request.app.state.settings.deadline_header} must "
                       f"be a positive number of milliseconds, got {raw!r}")
    return time.monotonic() + ms / 1000.0


async def require_admin(request: Request,
                  authorization: Annotated[str | None, Header()] = None) -> None:
    token = request.app.state.settings.admin_token
    if token is None:
        raise ApiError(403, "forbidden", "admin endpoints are disabled (set SPECULA_ADMIN_TOKEN)")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.encode(), token.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "admin endpoints need 'Authorization: Bearer <token>'")


def offered_keys(request: Request) -> list[bytes]:
    """Every credential the request offers as an API key: the Bearer token and the
    ``X-API-Key`` header, both when both are sent (a gateway may add its own Authorization
    to a client's X-API-Key, e.g. the admin token), so that one valid key is enough."""
    offered = []
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        offered.append(bearer.strip().encode())
    header = request.headers.get("x-api-key")
    if header is not None:
        offered.append(header.strip().encode())
    return [k for k in offered if k]


async def require_api_key(request: Request) -> None:
    """With API keys configured, inference needs one: ``Authorization: Bearer <key>`` or
    ``X-API-Key: <key>``. Every offered credential is compared with every configured key, in
    constant time each."""
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return
    ok = False
    for given in offered_keys(request):
        for key in keys:  # no early exit: the time does not tell which key matched
            ok |= hmac.compare_digest(given, key)
    if not ok:
        raise ApiError(401, "unauthorized", "this endpoint needs an API key "
                       "('Authorization: Bearer <key>' or 'X-API-Key: <key>')",
                       headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServerDep = Annotated[ModelServer, Depends(get_server)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DeadlineDep = Annotated[float | None, Depends(get_deadline)]
AdminDep = Annotated[None, Depends(require_admin)]


@dataclass
class Observation:
    items: int = 0


@asynccontextmanager
async def observe(metrics: Metrics, served: ServedModel, endpoint: str = "infer"
                  ) -> AsyncIterator[Observation]:
    """Count one model request by outcome and time it end to end, under its endpoint label
    (saliency and introspection are counted apart from inference)."""
    obs = Observation()
    t0 = time.perf_counter()
    outcome = "success"
    try:
        yield obs
    except BaseException as exc:
        outcome = outcome_of(exc)
        raise
    finally:
        metrics.record(RequestStats(served.name, str(served.version), outcome,
                                    time.perf_counter() - t0, obs.items, endpoint=endpoint))
