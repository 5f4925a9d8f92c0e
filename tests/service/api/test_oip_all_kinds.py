"""Every /v2 route answers for every model kind, and lightcone models live in the one server.

Over real HTTP (a `specula serve` process on loopback). The repository holds the tiny spectrum
classifier (versions 1 and 2) and the shipped lightcone_regressor v2: index, readiness per
version, metadata, config, statistics and infer answer for both kinds through one router; the
admin reload and SIGHUP reload lightcone models as they reload spectrum models; the startup log
names both.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
SHIPPED_LIGHTCONE = REPO / "models" / "lightcone_regressor"
LIGHTCONE = "lightcone_regressor"
SPECTRUM = "spectrum_classifier"
# input name, one row's shape, output the test reads and its width
KINDS = {SPECTRUM: ("spectrum", [2, 4076], "probs", 6),
         LIGHTCONE: ("lightcone", [1, 16, 16, 128], "theta_mean", 5)}
TOKEN = "all-kinds-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
pytestmark = pytest.mark.e2e


def two_kinds(api_repo: Path, root: Path, lightcone_versions=(2,)) -> Path:
    """A copy of the tiny classifier's repository with shipped lightcone versions beside it."""
    shutil.copytree(api_repo, root)
    for v in lightcone_versions:
        shutil.copytree(SHIPPED_LIGHTCONE / str(v), root / LIGHTCONE / str(v))
    return root


def rows(model: str, n: int, seed: int = 0) -> np.ndarray:
    shape = KINDS[model][1]
    return np.random.default_rng(seed).normal(0, 0.3, (n, *shape)).astype("<f4")


def binary_infer(client, model: str, x: np.ndarray, version: int | None = None):
    name, _, out, _ = KINDS[model]
    header = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": out}]}).encode()
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return client.post(path, content=header + x.tobytes(),
                       headers={"Inference-Header-Content-Length": str(len(header))})


def output(r, name: str) -> np.ndarray:
    assert r.status_code == 200, r.text
    doc = r.json()
    (o,) = [o for o in doc["outputs"] if o["name"] == name]
    return np.array(o["data"], np.float32).reshape(o["shape"])


def check_index(svc) -> None:
    r = svc.client.post("/v2/repository/index")
    assert r.status_code == 200, r.text
    assert {(e["name"], e["version"], e["state"]) for e in r.json()} == {
        (SPECTRUM, "1", "READY"), (SPECTRUM, "2", "READY"), (LIGHTCONE, "2", "READY")}


def check_version(svc, model: str, version: int) -> None:
    """Readiness, metadata, config and infer of one version (2 is the latest of both)."""
    c = svc.client
    r = c.get(f"/v2/models/{model}/versions/{version}/ready")
    assert r.status_code == 200 and r.json() == {"name": model, "version": str(version),
                                                 "ready": True}
    meta = c.get(f"/v2/models/{model}/versions/{version}").json()
    assert meta["parameters"]["version"] == version
    assert meta["inputs"][0]["name"] == KINDS[model][0]
    for path in (f"/v2/models/{model}/config", f"/v2/models/{model}/versions/{version}/config"):
        cfg = c.get(path)
        assert cfg.status_code == 200, cfg.text
        cfg = cfg.json()
        assert cfg["name"] == model and cfg["platform"] == "onnxruntime_onnx"
        assert cfg["max_batch_size"] > 0
        assert cfg["input"] == [{"name": KINDS[model][0], "data_type": "TYPE_FP32",
                                 "format": "FORMAT_NONE", "dims": KINDS[model][1]}]
        out = {o["name"]: o for o in cfg["output"]}[KINDS[model][2]]
        assert out["data_type"] == "TYPE_FP32" and out["dims"] == [KINDS[model][3]]
    x = rows(model, 3, seed=version)
    pinned = output(binary_infer(c, model, x, version), KINDS[model][2])
    assert pinned.shape == (3, KINDS[model][3])
    if version == 2:
        np.testing.assert_allclose(output(binary_infer(c, model, x), KINDS[model][2]), pinned,
                                   rtol=1e-5, atol=1e-6)


def check_unknown(svc) -> None:
    c = svc.client
    for path in (f"/v2/models/{LIGHTCONE}/versions/9/ready", f"/v2/models/{LIGHTCONE}/versions/9",
                 f"/v2/models/{LIGHTCONE}/versions/9/config",
                 f"/v2/models/{LIGHTCONE}/versions/9/stats", "/v2/models/nope/config",
                 "/v2/models/nope/stats", "/v2/models/nope/ready"):
        r = c.get(path)
        assert r.status_code == 404 and r.json()["code"] == "model_not_found", (path, r.text)
    r = c.get(f"/v2/models/{LIGHTCONE}/versions/x/config")
    assert r.status_code == 400 and r.json()["code"] == "bad_request"
    # a native endpoint of one kind does not serve a model of another
    r = c.post("/v1/lightcones:infer", params={"model": SPECTRUM, "shape": "16,16,128"},
               content=np.zeros((16, 16, 128), "<f4").tobytes())
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"


def stats_of(client, path: str) -> dict[tuple[str, str], dict]:
    r = client.get(path)
    assert r.status_code == 200, r.text
    return {(s["name"], s["version"]): s for s in r.json()["model_stats"]}


def check_statistics(svc, model: str) -> None:
    c = svc.client
    before = stats_of(c, f"/v2/models/{model}/versions/2/stats")[(model, "2")]
    assert output(binary_infer(c, model, rows(model, 2), 2), KINDS[model][2]).shape[0] == 2
    bad = binary_infer(c, model, np.ascontiguousarray(rows(model, 1)[:, :, :8]), 2)
    assert bad.status_code == 400
    after = stats_of(c, f"/v2/models/{model}/stats")[(model, "2")]
    s0, s1 = before["inference_stats"], after["inference_stats"]
    assert s1["success"]["count"] == s0["success"]["count"] + 1
    assert s1["success"]["ns"] > s0["success"]["ns"]
    assert s1["fail"]["count"] == s0["fail"]["count"] + 1
    assert s1["compute_infer"]["count"] >= s0["compute_infer"]["count"] + 1
    assert s1["compute_infer"]["ns"] > s0["compute_infer"]["ns"]
    assert s1["queue"]["count"] >= s0["queue"]["count"] + 1
    assert after["inference_count"] == before["inference_count"] + 2
    assert after["execution_count"] >= before["execution_count"] + 1
    everything = stats_of(c, "/v2/models/stats")
    assert {(SPECTRUM, "1"), (SPECTRUM, "2"), (LIGHTCONE, "2")} <= set(everything)
    assert everything[(model, "2")]["inference_count"] == after["inference_count"]


def check_startup_log(svc) -> None:
    loaded = [json.loads(line) for line in svc.log_path.read_text().splitlines()
              if '"models loaded"' in line]
    assert loaded and set(loaded[0]["report"]) == {SPECTRUM, LIGHTCONE}
    assert loaded[0]["report"][LIGHTCONE]["status"] == "ok"


def test_every_v2_route_answers_for_every_kind(start_service, api_repo, tmp_path):
    svc = start_service(two_kinds(api_repo, tmp_path / "models"))
    check_startup_log(svc)
    check_index(svc)
    for model, version in [(SPECTRUM, 1), (SPECTRUM, 2), (LIGHTCONE, 2)]:
        check_version(svc, model, version)
    check_unknown(svc)
    for model in (SPECTRUM, LIGHTCONE):
        check_statistics(svc, model)


def wait_until(predicate, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition never became true")
        time.sleep(0.05)


def test_lightcone_models_reload_with_the_admin_reload_and_sighup(start_service, api_repo,
                                                                  tmp_path):
    root = two_kinds(api_repo, tmp_path / "models")
    svc = start_service(root, admin_token=TOKEN)
    c = svc.client
    assert c.get(f"/v2/models/{LIGHTCONE}/versions/3/ready").status_code == 404
    x = rows(LIGHTCONE, 1)
    v2 = output(binary_infer(c, LIGHTCONE, x), "theta_mean")

    shutil.copytree(SHIPPED_LIGHTCONE / "3", root / LIGHTCONE / "3")
    r = c.post("/v1/admin/reload", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["models"][LIGHTCONE]["versions"] == [2, 3]
    assert c.get(f"/v2/models/{LIGHTCONE}/versions/3/ready").status_code == 200
    assert c.get(f"/v2/models/{LIGHTCONE}").json()["parameters"]["version"] == 3
    np.testing.assert_allclose(output(binary_infer(c, LIGHTCONE, x, 2), "theta_mean"), v2,
                               rtol=1e-5, atol=1e-6)  # the unchanged version kept serving

    # one model's reload route, then a failed reload keeps what is served
    manifest = root / LIGHTCONE / "3" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "sha256": "0" * 64}))
    r = c.post(f"/v2/repository/models/{LIGHTCONE}/load", headers=ADMIN)
    assert r.status_code == 409 and r.json()["code"] == "checksum_mismatch"
    assert r.json()["models"][LIGHTCONE]["serving"] == [2, 3]
    assert c.get(f"/v2/models/{LIGHTCONE}/versions/3/ready").status_code == 200

    # SIGHUP: version 3 leaves the repository, version 1 arrives
    shutil.rmtree(root / LIGHTCONE / "3")
    shutil.copytree(SHIPPED_LIGHTCONE / "1", root / LIGHTCONE / "1")
    svc.signal(signal.SIGHUP)
    wait_until(lambda: c.get(f"/v2/models/{LIGHTCONE}/versions/1/ready").status_code == 200)
    wait_until(lambda: c.get(f"/v2/models/{LIGHTCONE}/versions/3/ready").status_code == 404)
    index = {(e["name"], e["version"]) for e in c.post("/v2/repository/index").json()}
    assert {(LIGHTCONE, "1"), (LIGHTCONE, "2")} <= index and (LIGHTCONE, "3") not in index
    native = c.post("/v1/lightcones:infer", params={"model": LIGHTCONE, "version": 2,
                                                    "shape": "16,16,128"},
                    content=np.zeros((16, 16, 128), "<f4").tobytes())
    assert native.status_code == 200, native.text
