"""``specula serve``: settings from flags, environment and file, then one process or workers.

A module of its own so that the ``--workers`` supervisor imports only this, the settings
and uvicorn: the app (FastAPI, ONNX Runtime, the models) is imported by each worker, not by
the process that only watches them.
"""

from __future__ import annotations

import argparse

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from service.settings import load_settings, settings_help

from .logs import configure_logging
from .memory import keep_upload_memory
from .shutdown import DrainingServer
from .workers import serve_workers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="specula serve", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the inference service. Every setting below is read from its "
                    "environment variable or from the settings file; the flags override both.",
        epilog=settings_help())
    p.add_argument("--config", metavar="FILE", help="settings file (.toml, .json or .env); "
                   "same as SPECULA_CONFIG")
    p.add_argument("--host", help="bind address (SPECULA_HOST)")
    p.add_argument("--port", type=int, help="port (SPECULA_PORT)")
    p.add_argument("--repository", "--model-repository", dest="model_repository", metavar="DIR",
                   help="model repository root (SPECULA_MODEL_REPOSITORY; default: the models/ "
                        "shipped with the package); the service refuses to start when no "
                        "model in it loads")
    p.add_argument("--log-level", help="debug, info, warning or error (SPECULA_LOG_LEVEL)")
    p.add_argument("--workers", type=int, help="service processes on the one port "
                   "(SPECULA_WORKERS)")
    args = p.parse_args(argv)
    config = args.config
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    try:
        settings = load_settings(config, **overrides)
    except (ValueError, OSError) as exc:  # a bad settings file: say so, no traceback
        p.error(str(exc))
    configure_logging(settings.log_level)
    if settings.workers > 1:
        return serve_workers(settings)
    from .main import create_app  # deferred: a --workers supervisor never imports the app

    keep_upload_memory(settings)
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_config=None,
        access_log=False, timeout_graceful_shutdown=settings.graceful_shutdown_s,
        timeout_keep_alive=30)
    server = DrainingServer(config)
    server.run()  # SIGTERM: service/api/shutdown.py
    return 0 if server.started else STARTUP_FAILURE  # e.g. no model loaded (main.py)
