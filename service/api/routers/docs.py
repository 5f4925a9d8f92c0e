"""The OpenAPI schema and its two viewers (Swagger UI, ReDoc) as an ordinary router.

Why not FastAPI's own ``/openapi.json``, ``/docs`` and ``/redoc``: those are added outside
every router, so they cannot take the API-key dependency. The schema lists every route and
parameter of the service, so with API keys configured it is served to key holders only
(main.py includes this router with the key dependency then); without keys it is open, as
before.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

router = APIRouter(include_in_schema=False)
OPENAPI_URL = "/openapi.json"


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")
