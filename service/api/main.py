"""The app: settings → metrics → model server → routers. ``specula serve`` (service/api/serve.py)
runs it on uvicorn.

Shutdown on SIGTERM (uvicorn's handling): stop accepting connections, let every request in
flight finish (up to SPECULA_GRACEFUL_SHUTDOWN_S), then the lifespan drains the batchers.
SIGHUP reloads the model repository, as the admin endpoint does.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.inference.serving import ModelServer
from service.metrics import Metrics
from service.settings import Settings

from .deps import require_api_key
from .errors import install_error_handlers
from .hotpath import HotRoutes
from .middleware import BodyLimitMiddleware, TraceMiddleware
from .routers import health, lightcones, metrics, models, repository, saliency, spectra

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
    yield
    await server.close()
    log.info("drained and stopped")


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
                             "operation_spans": False})
    app.state.settings = settings
    app.state.metrics = metrics_ or Metrics(queue_capacity_rows=settings.max_queue_rows)
    app.state.server = ModelServer(settings, app.state.metrics.record)
    app.state.api_keys = settings.api_key_values()  # read once: a key file is not re-read
    # inference routers need an API key when keys are configured; health, metrics and the
    # repository router (admin token on its own routes) do not
    # (keys are read once, so with none configured the check is left out, not run per request)
    keyed = [Depends(require_api_key)] if app.state.api_keys else []
    app.include_router(lightcones.router, dependencies=keyed)  # before models.router
    for router in (models.router, spectra.router, saliency.router):
        app.include_router(router, dependencies=keyed)
    for router in (health.router, repository.router, metrics.router):
        app.include_router(router)
    install_error_handlers(app)
    if settings.hot_routes:  # innermost: the limits, trace context and access log wrap it
        app.add_middleware(HotRoutes)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes,
                       max_inflight_bytes=settings.max_inflight_bytes,
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
