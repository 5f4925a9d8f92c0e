"""/docs and /redoc work offline: every asset they load is served by the service itself.

Observatory networks often cannot reach a CDN, and FastAPI's default viewers then showed a
blank page. The plain tests read the HTML and fetch its assets; the browser tests render both
pages in headless Chromium with every host but loopback unresolvable, and read Chromium's
network log: the operations' summaries in the DOM prove the JavaScript ran, and no request
the page made went anywhere but the service.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service.api.routers import docs
from tests.support.http_service import REPO_ROOT

pytestmark = pytest.mark.e2e
PAGES = ("/docs", "/redoc")
ASSET = re.compile(r'(?:src|href)="([^"]+)"')
CONTENT_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
                 ".png": ("image/png",)}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# what the page must show once its JavaScript has rendered the schema
RENDERED = ("Classify spectra, with redshift and uncertainty", "/v1/spectra:classify")


def assets_of(html: str) -> list[str]:
    return ASSET.findall(html)


@pytest.mark.parametrize("page", PAGES)
def test_viewer_pages_reference_only_the_services_own_assets(service, page):
    r = service.client.get(page)
    assert r.status_code == 200
    assert not re.search(r"https?://", r.text), "a host named in the page"
    # and whatever a bundle names itself (ReDoc's logo on cdn.redoc.ly) the browser refuses
    assert "default-src 'self'" in r.headers["content-security-policy"]
    urls = assets_of(r.text)
    assert urls and all(u.startswith(docs.STATIC_URL + "/") for u in urls), urls
    for url in urls:
        asset = service.client.get(url)
        assert asset.status_code == 200, url
        ctype = asset.headers["content-type"].split(";")[0]
        assert ctype in CONTENT_TYPES[Path(url).suffix], (url, ctype)
        assert len(asset.content) > 500, url


def test_swagger_ui_has_no_online_validator(service):
    """Swagger UI's default validator badge would send the schema's URL to
    validator.swagger.io."""
    assert '"validatorUrl": null' in service.client.get("/docs").text


def test_vendored_assets_carry_their_licences_and_ship_in_the_wheel():
    static = REPO_ROOT / "service/api/static"
    for viewer in ("swagger-ui", "redoc"):
        assert (static / viewer / "LICENSE").stat().st_size > 500, viewer
    # every file under static/ is matched by the package-data globs a wheel is built from
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["service"]
    shipped = {p for g in globs for p in (REPO_ROOT / "service").glob(g)}
    assert {p for p in static.rglob("*") if p.is_file()} <= shipped


def test_every_operation_has_a_summary_and_a_description(service):
    schema = service.client.get("/openapi.json").json()
    ops = [(path, op) for path, item in schema["paths"].items() for op in item.values()]
    missing = [(p, op["operationId"]) for p, op in ops
               if not op.get("summary") or not op.get("description")]
    assert ops and not missing, missing


def chromium(url: str, out: Path) -> tuple[str, list[tuple[str, str]]]:
    """The DOM of ``url`` after its scripts ran, and (initiator, url) of every request
    Chromium made; any host but 127.0.0.1 is unresolvable."""
    netlog = out / "netlog.json"
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={out / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         f"--log-net-log={netlog}", "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True).stdout
    return dom, requests_in(json.loads(netlog.read_text()))


def requests_in(netlog: dict) -> list[tuple[str, str]]:
    start = netlog["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [(e["params"].get("initiator", ""), e["params"]["url"]) for e in netlog["events"]
            if e["type"] == start and "url" in e.get("params", {})]


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
@pytest.mark.parametrize("page", PAGES)
def test_viewer_renders_offline_in_a_browser(service, tmp_path, page):
    dom, requests = chromium(service.url + page, tmp_path)
    for text in RENDERED:
        assert text in dom, f"{text!r} not rendered: the viewer's JavaScript did not run"
    # the page's own requests (Chromium's background ones carry no page initiator)
    from_page = [u for who, u in requests if who == service.url]
    assert any(u.endswith(docs.OPENAPI_URL) for u in from_page), from_page
    assert all(origin(u) == service.url for u in from_page), from_page
