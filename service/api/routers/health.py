"""Server liveness, readiness and metadata (Open Inference Protocol v2).

Two routers: the probes (``router``, always open) and the server metadata
(``metadata_router``, which main.py puts behind the API key when keys are configured)."""

from __future__ import annotations

from fastapi import APIRouter

import service

from .. import examples
from ..deps import ServerDep
from ..errors import ApiError
from ..schemas import ServerMetadata, error_responses, ok

router = APIRouter(tags=["health"])
# server metadata names the build: behind the API key when keys are set (probes stay open)
metadata_router = APIRouter(tags=["health"])
EXTENSIONS = ["binary_tensor_data", "model_repository"]


@router.get("/v2/health/live", operation_id="server_live", summary="Liveness probe",
            responses={**ok(examples.SERVER_LIVE), **error_responses(503)})
async def live() -> dict:
    """The process answers HTTP (OIP server live). 503 once shutdown has begun."""
    return {"live": True}


@router.get("/v2/health/ready", operation_id="server_ready", summary="Readiness probe",
            # 400: not ready (OIP: 4xx means false)
            responses={**ok(examples.SERVER_READY), **error_responses(400, 503)})
async def ready(server: ServerDep) -> dict:
    """Ready once at least one model version is loaded; 400 ``not_ready`` before (OIP: a 4xx
    means false), 503 while shutting down."""
    if not server.ready:
        raise ApiError(400, "not_ready", "no model is loaded")
    return {"ready": True}


@metadata_router.get("/v2", operation_id="server_metadata", response_model=ServerMetadata,
                     summary="Server metadata",
                     responses={**ok(examples.SERVER_METADATA), **error_responses(401, 503)})
async def server_metadata() -> dict:
    """The server's name, version and the OIP extensions it implements."""
    return {"name": "specula", "version": service.__version__, "extensions": EXTENSIONS}
