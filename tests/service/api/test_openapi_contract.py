"""The OpenAPI schema is the server's contract: every generated client is built from it.

In-process checks of the schema itself (unique operation ids, every error status declared
with the one error body, the NDJSON stream, bodies that may not be empty); HTTP checks of
what schemathesis found (405's Allow header, a 500 on ``model=``); and a bounded schemathesis
run, every check on, against a `specula serve` on loopback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.api.main import create_app
from service.settings import Settings
from tests.support.http_service import ADMIN_TOKEN

HERE = Path(__file__).resolve().parent
ERROR_REF = "#/components/schemas/ErrorBody"
NDJSON = "application/x-ndjson"
UPLOAD = {400, 401, 404, 413, 415, 422, 429, 503, 504}  # a file in, a model's answer out
CUBE = {*UPLOAD, 411}  # cubes are sized by Content-Length before they are read
OIP_INFER = {400, 401, 404, 411, 413, 422, 429, 503, 504}
# every operation id (stable: clients name their methods after them) and the error statuses
# it can give — 400 bad parameter/header/body, 401 no API key (or admin token), 403 admin
# disabled, 404 unknown model, 409 no saliency graph or a failed reload, 503 shutting down
ERRORS = {
    "classify_spectra": UPLOAD,
    "spectra_saliency": {*UPLOAD, 409},
    "spectra_activations": {*UPLOAD, 409},
    "spectra_filters": {400, 401, 404, 409, 429, 503, 504},
    "lightcone_infer": CUBE,
    "lightcone_saliency": {*CUBE, 409},
    "model_metadata": {401, 404, 503},
    "model_version_metadata": {400, 401, 404, 503},
    "model_ready": {401, 404, 503},
    "model_version_ready": {400, 401, 404, 503},
    "model_infer": OIP_INFER,
    "model_version_infer": OIP_INFER,
    "model_config": {401, 404, 503},
    "model_version_config": {400, 401, 404, 503},
    "model_stats": {401, 404, 503},
    "model_version_stats": {400, 401, 404, 503},
    "models_stats": {401, 503},
    "server_live": {503},
    "server_ready": {400, 503},  # 400: not ready (OIP: a 4xx means false)
    "server_metadata": {401, 503},
    "repository_index": {401, 503},
    "repository_model_load": {401, 403, 404, 409, 503},
    "repository_reload": {401, 403, 409, 503},
}
UPLOADS = {"classify_spectra", "spectra_saliency", "spectra_activations", "lightcone_infer",
           "lightcone_saliency", "model_infer", "model_version_infer"}
EMPTY_FORBIDDEN = ("minLength", "minItems", "minProperties", "required")

MAX_EXAMPLES = 6  # per operation and phase: ~900 cases (the coverage phase adds its own), ~15 s
# schemathesis.toml for the run. Each relaxation says why it is not a server defect.
CONFIG = """
[parameters]
# reach the model, not only its 404 (an unknown name is still drawn for ?model=)
"path.name" = "spectrum_classifier"
# reach the reload handlers: without the token every call would end at deps.require_admin's 401
"header.authorization" = "Bearer {admin_token}"

# A schema can say a body is a non-empty file, not that its bytes are a spectrum or a cube
# a reader accepts: such a file is answered 415 unknown_format (no reader recognises it),
# 422 (readable but fails a content check) or 413 (its decoded size passes a limit), each
# declared with the error body. Only those statuses are added to what valid data may get.
[[operations]]
include-operation-id-regex = "^(classify_spectra|spectra_(saliency|activations)|lightcone_.*)$"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "413", "415", "422", "429", "5xx"]

# An OIP request's tensors must match the named model's input (name, datatype, shape), which
# the schema of `/v2/models/{{name}}/infer` cannot say for every model, nor that
# Inference-Header-Content-Length must fall inside the body: such a schema-valid request is
# answered 400 (bad_tensor, bad_shape, bad_dtype, bad_request), as OIP prescribes.
[[operations]]
include-operation-id-regex = "^model_(version_)?infer$"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "413", "422", "429", "5xx"]
"""


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    """The schema as served, built in-process (the routes are declared without a model)."""
    repo = tmp_path_factory.mktemp("no-models")
    return create_app(Settings(model_repository=str(repo))).openapi()


def operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, op) for path, ops in schema["paths"].items()
            for method, op in ops.items()]


def by_id(schema: dict) -> dict[str, dict]:
    return {op["operationId"]: op for _, _, op in operations(schema)}


def test_operation_ids_are_unique_and_stable(schema):
    """Clients name their methods after operation ids: FastAPI's generated ones repeated five
    times (the OIP routes two routers share) and change with any path or function rename."""
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids)), sorted(ids)
    assert set(ids) == set(ERRORS)


def test_every_error_status_is_declared_with_the_error_body(schema):
    """Each operation declares the errors it gives, each with the one error body; a failed
    validation is a 400 with that body, so FastAPI's automatic 422 HTTPValidationError was a
    response the server never gives."""
    assert "HTTPValidationError" not in json.dumps(schema)
    for op_id, op in by_id(schema).items():
        errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
        assert errors.keys() == ERRORS[op_id], (op_id, sorted(errors))
        for status, response in errors.items():
            ref = response["content"]["application/json"]["schema"]["$ref"]
            assert ref == ERROR_REF, (op_id, status)


def test_error_body_is_error_code_and_optional_source(schema):
    body = schema["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["error", "code"]
    assert {k: v["type"] for k, v in body["properties"].items()} == {
        "error": "string", "code": "string", "source": "string"}


def test_stream_response_is_declared(schema):
    """``?stream=true`` answers application/x-ndjson, one spectrum a line."""
    content = by_id(schema)["classify_spectra"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", NDJSON}
    items = content[NDJSON]["schema"]["items"]["anyOf"]
    names = {i["$ref"].rsplit("/", 1)[1] if "$ref" in i else i["title"] for i in items}
    assert names == {"ClassifiedSpectrum", "SpectrumFailure", "UploadFailure"}


def test_upload_bodies_are_required_and_never_empty(schema):
    """An empty body is refused (400), so no body the schema allows may be empty; the
    lightcone routes declared no body at all."""
    ops = by_id(schema)
    for op_id in UPLOADS:
        body = ops[op_id].get("requestBody")
        assert body and body["required"], op_id
        for media, content in body["content"].items():
            assert any(k in content["schema"] for k in EMPTY_FORBIDDEN), (op_id, media)


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["OPTIONS", "DELETE", "PUT"])
def test_405_allows_every_method_of_the_path(service, method):
    """``/v1/spectra:introspect`` has GET and POST; Starlette's 405 named only the first
    route's methods (``Allow: GET``)."""
    r = service.client.request(method, "/v1/spectra:introspect")
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
    assert r.json()["code"] == "method_not_allowed"


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/v1/lightcones:infer", "/v1/lightcones:saliency"])
def test_empty_model_without_lightcone_models_is_404(service, path):
    """``?model=`` (empty) with no lightcone model served was an IndexError, a 500."""
    r = service.client.post(path, params={"model": ""}, content=b"\0\0\0\0")
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "model_not_found"


@pytest.mark.e2e
@pytest.mark.slow
def test_schemathesis_finds_nothing(start_service, api_repo, tmp_path):
    """Every schemathesis check (status codes, content types, response schemas and headers,
    valid data accepted, invalid data refused, 405 with Allow) over every phase (coverage,
    fuzzing, stateful), bounded, seeded for a repeatable run."""
    svc = start_service(api_repo)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(admin_token=ADMIN_TOKEN))
    r = run_schemathesis(svc.url, config, tmp_path)
    assert r.returncode == 0, r.stdout[-12000:] + r.stderr[-2000:]
    m = re.search(r"(\d+) generated", r.stdout)
    assert m and int(m.group(1)) >= 200, r.stdout[-3000:]
    print(f"schemathesis: {m.group(1)} cases")


def run_schemathesis(url: str, config: Path, workdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py")}
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
           f"{url}/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
           "--seed", "1", "--workers", "1", "--generation-database", "none", "--no-color",
           "--warnings", "off", "--request-timeout", "30"]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # the caller asserts, with the report
