"""Security settings over real HTTP: optional API keys on inference (env and key file, read
through a settings file), the separate admin credential, CORS off by default and an allow-list
when configured; plus the settings-file precedence rules (no server needed)."""

from __future__ import annotations

import json

import pytest

from service.settings import Settings, load_settings
from tests.support.http_service import ADMIN_TOKEN
from tests.support.loadgen import oip_rows
from tests.support.ops_service import OpsService

OIP = oip_rows(1)
ORIGIN = "https://portal.example.org"


@pytest.fixture(scope="module")
def keyed(ops_repo, tmp_path_factory):
    """A service whose settings file names a key file and a CORS allow-list; one more key
    comes from the environment."""
    d = tmp_path_factory.mktemp("keyed")
    (d / "keys.txt").write_text("# inference keys\nfile-key-1\n\nfile-key-2  # rotated in May\n")
    (d / "specula.toml").write_text(
        f'api_keys_file = "{d / "keys.txt"}"\ncors_allow_origins = ["{ORIGIN}"]\n'
        "max_batch_size = 16\n")
    svc = OpsService(ops_repo, d / "service.log", config=str(d / "specula.toml"),
                     api_keys=["env-key"])
    yield svc
    svc.stop()


def infer(svc, **headers):
    return svc.client.post(OIP.path, content=OIP.body, headers={**OIP.headers, **headers})


@pytest.mark.e2e
def test_inference_needs_a_key_when_keys_are_configured(keyed):
    assert infer(keyed).status_code == 401
    r = infer(keyed, authorization="Bearer wrong")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert infer(keyed, authorization="Bearer env-key").status_code == 200
    assert infer(keyed, **{"x-api-key": "file-key-1"}).status_code == 200
    assert infer(keyed, **{"x-api-key": "file-key-2"}).status_code == 200
    assert infer(keyed, **{"x-api-key": "file-key-2  # rotated in May"}).status_code == 401
    assert keyed.client.post("/v1/spectra:classify", content=b"x").status_code == 401
    assert keyed.client.get("/v2/models/spectrum_classifier").status_code == 401
    # probes and scrapes stay open (/metrics unless SPECULA_METRICS_REQUIRE_KEY)
    for path in ("/v2/health/ready", "/v2/health/live", "/metrics"):
        assert keyed.client.get(path).status_code == 200, path


@pytest.mark.e2e
def test_metadata_index_and_schema_need_a_key_when_keys_are_configured(keyed):
    """Server metadata, the repository index and the OpenAPI schema with its viewers name the
    build and every route: key holders only once keys are configured."""
    key = {"x-api-key": "file-key-1"}
    for method, path in (("GET", "/v2"), ("POST", "/v2/repository/index"),
                         ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")):
        r = keyed.client.request(method, path)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", path
        assert keyed.client.request(method, path, headers=key).status_code == 200, path
    assert keyed.client.get("/v2", headers=key).json()["name"] == "specula"
    assert "/v1/spectra:classify" in keyed.client.get("/openapi.json", headers=key).json()[
        "paths"]
    index = keyed.client.post("/v2/repository/index", headers=key).json()
    assert {e["name"] for e in index} == {"spectrum_classifier"}


@pytest.mark.e2e
def test_a_valid_key_is_enough_beside_an_admin_bearer_token(keyed):
    """A gateway that adds the admin token as Authorization to a client's X-API-Key: the
    valid key is accepted on inference, the admin token on the admin route."""
    both = {"x-api-key": "env-key", "authorization": f"Bearer {ADMIN_TOKEN}"}
    assert infer(keyed, **both).status_code == 200
    assert keyed.client.post("/v1/admin/reload", headers=both).status_code == 200
    # neither credential valid for inference: still refused
    r = infer(keyed, **{"x-api-key": "wrong", "authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


@pytest.mark.e2e
def test_metrics_can_require_a_key(start_ops, ops_repo):
    svc = start_ops(ops_repo, api_keys=["scrape-key"], metrics_require_key="true")
    r = svc.client.get("/metrics")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    r = svc.client.get("/metrics", headers={"authorization": "Bearer scrape-key"})
    assert r.status_code == 200 and "specula_" in r.text
    assert svc.client.get("/v2/health/live").status_code == 200


@pytest.mark.e2e
@pytest.mark.parametrize("keys", ['[""]', '["  "]', '["good-key", ""]'])
def test_an_empty_api_key_stops_the_start(start_ops, ops_repo, keys):
    """``SPECULA_API_KEYS='[""]'`` used to switch authentication off silently (the empty key
    was dropped, leaving no key): now the service refuses to start and says why."""
    svc = start_ops(ops_repo, wait=False, api_keys=keys)
    assert svc.proc.wait(60) != 0
    assert "empty (or whitespace-only) key" in svc.log_path.read_text()


@pytest.mark.e2e
def test_admin_reload_takes_the_admin_token_not_an_api_key(keyed):
    assert keyed.client.post("/v1/admin/reload",
                             headers={"authorization": "Bearer env-key"}).status_code == 401
    r = keyed.client.post("/v1/admin/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200
    # an admin token is not an inference key either
    assert infer(keyed, authorization=f"Bearer {ADMIN_TOKEN}").status_code == 401


@pytest.mark.e2e
def test_cors_allow_list(keyed):
    pre = keyed.client.options(OIP.path, headers={
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ORIGIN
    evil = keyed.client.options(OIP.path, headers={
        "origin": "https://evil.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in evil.headers
    r = infer(keyed, origin=ORIGIN, authorization="Bearer env-key")
    assert r.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.e2e
def test_cors_is_off_and_auth_is_off_by_default(ops_service):
    r = ops_service.client.post(OIP.path, content=OIP.body,
                                headers={**OIP.headers, "origin": ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = ops_service.client.options(OIP.path, headers={
        "origin": ORIGIN, "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


# ---- settings file (no server) ---------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".toml", ".json", ".env"])
def test_settings_file_then_env_then_flags(tmp_path, monkeypatch, suffix):
    for k in list(__import__("os").environ):
        if k.startswith("SPECULA_"):
            monkeypatch.delenv(k)
    path = tmp_path / f"specula{suffix}"
    values = {"max_batch_size": 32, "port": 9001, "models": ["a", "b"], "log_level": "debug"}
    if suffix == ".toml":
        path.write_text('max_batch_size = 32\nport = 9001\nmodels = ["a", "b"]\n'
                        'log_level = "debug"\n')
    elif suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        path.write_text('SPECULA_MAX_BATCH_SIZE=32\nSPECULA_PORT=9001\n'
                        'SPECULA_MODELS=["a","b"]\nSPECULA_LOG_LEVEL=debug\n')
    s = load_settings(path)
    assert (s.max_batch_size, s.port, s.models, s.log_level) == (32, 9001, ["a", "b"], "debug")
    assert s.config == path
    monkeypatch.setenv("SPECULA_PORT", "9002")          # env overrides the file
    monkeypatch.setenv("SPECULA_CONFIG", str(path))     # the file named by env
    s = Settings()
    assert (s.port, s.max_batch_size) == (9002, 32)
    s = load_settings(None, port=9003)                  # flags override env
    assert (s.port, s.max_batch_size) == (9003, 32)


def test_settings_file_with_an_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "specula.toml"
    path.write_text("max_batch_sise = 32\n")
    with pytest.raises(ValueError, match="unknown settings.*max_batch_sise"):
        load_settings(path)
    bad = tmp_path / "specula.yaml"
    bad.write_text("port: 1\n")
    with pytest.raises(ValueError, match="use .toml, .json or .env"):
        load_settings(bad)


def test_empty_api_keys_are_refused_by_the_settings():
    with pytest.raises(ValueError, match="empty"):
        Settings(api_keys=[""])
    with pytest.raises(ValueError, match="empty"):
        Settings(api_keys=["k", " \t"])


def test_a_key_file_without_keys_is_refused_by_the_settings(tmp_path):
    """A key file of only comments (or a missing one) used to leave authentication off."""
    keys = tmp_path / "keys"
    keys.write_text("# rotated out\n\n   \n")
    with pytest.raises(ValueError, match="holds no key"):
        Settings(api_keys_file=keys)
    with pytest.raises(ValueError, match="No such file"):
        Settings(api_keys_file=tmp_path / "absent")


def test_api_keys_from_env_and_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("a\n# c\n b \n")
    s = Settings(api_keys=["secret-key-x"], api_keys_file=keys)
    assert s.api_key_values() == [b"secret-key-x", b"a", b"b"]
    assert "secret-key-x" not in repr(s)  # secrets are not printed
