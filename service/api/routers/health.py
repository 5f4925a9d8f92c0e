"""Server liveness, readiness and metadata (Open Inference Protocol v2)."""

from __future__ import annotations

from fastapi import APIRouter

import service

from ..deps import ServerDep
from ..errors import ApiError
from ..schemas import ServerMetadata

router = APIRouter(tags=["health"])
EXTENSIONS = ["binary_tensor_data", "model_repository"]


@router.get("/v2/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/v2/health/ready", responses={400: {"description": "not ready"}})
async def ready(server: ServerDep) -> dict:
    """Ready once at least one model version is loaded (OIP: 4xx means false)."""
    if not server.ready:
        raise ApiError(400, "not_ready", "no model is loaded")
    return {"ready": True}


@router.get("/v2", response_model=ServerMetadata)
async def server_metadata() -> dict:
    return {"name": "specula", "version": service.__version__, "extensions": EXTENSIONS}
