"""The app: settings → metrics → model server → routers. ``specula serve`` (service/api/serve.py)
runs it on uvicorn.

Shutdown on SIGTERM (service/api/shutdown.py): refuse new requests (503 shutting_down), stop
accepting connections, let every request in flight finish, answer those still running near
SPECULA_GRACEFUL_SHUTDOWN_S 503 too, then the lifespan drains the batchers — all within it.
SIGHUP reloads the model repository, every model of every kind, as the admin endpoint does.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import asynccontextmanager
from functools import partial

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.inference.repository import repository_hint
from service.inference.serving import ModelServer
from service.metrics import Metrics
from service.settings import Settings

from .deadlines import DeadlineMiddleware
from .deps import require_api_key
from .errors import install_error_handlers
from .hotpath import HotRoutes
from .middleware import BodyLimitMiddleware, TraceMiddleware
from .routers import docs, health, lightcones, metrics, oip, repository, saliency, spectra
from .schemas import openapi_schema
from .shutdown import DRAIN_STATE, Drain, DrainMiddleware

log = logging.getLogger("specula.api")


@asynccontextmanager
async def lifespan(app: FastAPI):
    server: ModelServer = app.state.server
    report = await server.reload()
    log.info("models loaded", extra={"report": report})
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def on_sighup() -> None:
        task = loop.create_task(sighup_reload(server))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
        pass
    yield {DRAIN_STATE: app.state.drain}  # for the server's shutdown (shutdown.DrainingServer)
    await server.close()
    log.info("drained and stopped")


class NoModelLoaded(RuntimeError):
    """The service would serve nothing: it refuses to start (uvicorn exits, status 3)."""


@asynccontextmanager
async def require_a_model(app: FastAPI):
    """Entered after the models have loaded (the app's lifespan runs first). A service
    with no model answers every request 404 while its log says it started, which is what a
    repository path resolved against the wrong directory looks like: refuse to start
    instead, naming the absolute path and how to change it."""
    if not app.state.server.ready:
        hint = repository_hint(app.state.settings.model_repository)
        log.error("no model loaded; refusing to start", extra={"hint": hint})
        raise NoModelLoaded(f"no model loaded from {hint}")
    yield


async def sighup_reload(server: ModelServer) -> None:
    log.info("SIGHUP: reloading models", extra={"report": await server.reload()})


def create_app(settings: Settings | None = None, metrics_: Metrics | None = None) -> FastAPI:
    settings = settings or Settings()
    # FastAPI's OpenTelemetry hooks off: Specula exports its own Prometheus metrics and W3C
    # trace context, and the hooks cost a provider lookup and span wrappers per request
    app = FastAPI(title="Specula", version="1", lifespan=lifespan,
                  description="Spectrum classification with uncertainty; Open Inference "
                              "Protocol v2 compatible. See docs/service.md.",
                  telemetry={"tracing": False, "metrics": False, "logs": False,
                             "operation_spans": False},
                  # served by routers.docs instead, which can sit behind the API key
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics_ or Metrics(queue_capacity_rows=settings.max_queue_rows)
    app.state.server = ModelServer(settings, app.state.metrics.record)
    app.state.drain = Drain()
    app.state.api_keys = settings.api_key_values()  # read once: a key file is not re-read
    # with API keys configured everything but the health probes needs one: inference, model
    # and server metadata, the repository index and the OpenAPI schema and viewers; /metrics
    # only with SPECULA_METRICS_REQUIRE_KEY (scrapers usually carry no key); the reload routes
    # take the admin token instead (docs/operations.md, "Secure")
    # (keys are read once, so with none configured the check is left out, not run per request)
    keyed = [Depends(require_api_key)] if app.state.api_keys else []
    app.include_router(APIRouter(lifespan=require_a_model))  # after the models have loaded
    for router in (oip.router, spectra.router, lightcones.router, saliency.router,
                   health.metadata_router, repository.index_router, docs.router):
        app.include_router(router, dependencies=keyed)
    app.include_router(metrics.router, dependencies=keyed if settings.metrics_require_key
                       else [])
    for router in (health.router, repository.router):
        app.include_router(router)
    # the viewers' JS/CSS (routers.docs): open even with keys, as a browser loads them keyless
    app.mount(docs.STATIC_URL, docs.static_files(), name="static")
    install_error_handlers(app)
    app.openapi = partial(openapi_schema, app)  # type: ignore[method-assign]
    if settings.hot_routes:  # innermost: the limits, trace context and access log wrap it
        app.add_middleware(HotRoutes)
    app.add_middleware(DeadlineMiddleware, header=settings.deadline_header)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes,
                       max_inflight_bytes=settings.max_inflight_bytes,
                       retry_after_s=settings.retry_after_s)
    app.add_middleware(DrainMiddleware, drain=app.state.drain,
                       retry_after_s=settings.retry_after_s)
    app.add_middleware(TraceMiddleware, access_log_enabled=settings.access_log)
    if settings.cors_allow_origins:  # off by default: no CORS headers at all
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-api-key", "x-filename",
                           "traceparent", "inference-header-content-length",
                           settings.deadline_header],
            expose_headers=["traceparent", "retry-after", "inference-header-content-length"])
    return app
