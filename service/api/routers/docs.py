"""The OpenAPI schema and its two viewers (Swagger UI, ReDoc) as an ordinary router.

Why not FastAPI's own ``/openapi.json``, ``/docs`` and ``/redoc``: those are added outside
every router, so they cannot take the API-key dependency. The schema lists every route and
parameter of the service, so with API keys configured it is served to key holders only
(main.py includes this router with the key dependency then); without keys it is open, as
before.

Why the viewers' JavaScript and CSS are served from the package (``service/api/static``, see
its README.md for versions and licences) and not FastAPI's default CDN: observatory networks
often cannot reach one, and ``/docs`` was then a blank page. The pages name no host at all:
no CDN, no Google Fonts for ReDoc, and Swagger UI's online validator is switched off (its
badge would send the schema's URL to validator.swagger.io). What the bundles still name —
ReDoc's footer loads its logo from cdn.redoc.ly, unconditionally — the pages' Content
Security Policy (:data:`CSP`) stops in the browser: a viewer page fetches from its own origin
only (inline script and styles allowed: the pages' own bootstrap and the viewers' styling; blob
and data URLs: ReDoc's search worker and inline images). The assets are mounted open
(:func:`static_files`): they are the published Swagger UI and ReDoc files, nothing of this
service, and a browser does not send an API key with the ``<script>`` requests of a page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)
OPENAPI_URL = "/openapi.json"
STATIC_URL = "/static"
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
SWAGGER_JS = f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = f"{STATIC_URL}/swagger-ui/swagger-ui.css"
FAVICON = f"{STATIC_URL}/swagger-ui/favicon-32x32.png"
REDOC_JS = f"{STATIC_URL}/redoc/redoc.standalone.js"
# validatorUrl None: no "valid" badge fetched from validator.swagger.io
SWAGGER_PARAMETERS = {"validatorUrl": None}
CSP = {"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
       "worker-src 'self' blob:; connect-src 'self'"}


def static_files() -> StaticFiles:
    """The packaged viewer assets, for ``app.mount(STATIC_URL, ...)``."""
    return StaticFiles(directory=STATIC_DIR)


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


def same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(CSP)
    return page


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return same_origin_only(get_swagger_ui_html(
        openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI",
        swagger_js_url=SWAGGER_JS, swagger_css_url=SWAGGER_CSS, swagger_favicon_url=FAVICON,
        swagger_ui_parameters=SWAGGER_PARAMETERS))


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return same_origin_only(get_redoc_html(
        openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc", redoc_js_url=REDOC_JS,
        redoc_favicon_url=FAVICON, with_google_fonts=False))
