"""POST /v1/lightcones:saliency over real HTTP (a `specula serve` process on loopback).

The repository holds the tiny spectrum classifier and the shipped lightcone_regressor v2
(with its saliency.onnx) as version 2, and the same regressor without a saliency graph as
version 1. Maps are checked against saliency.onnx run directly on ONNX Runtime. The service
runs with SPECULA_LIGHTCONE_SALIENCY_MAX_BATCH_ROWS=2, and the batch-size histogram shows it.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.http_service import Service
from tests.support.tiny_classifier import write_tiny_model
from training.common.ort import ort_session

REPO = Path(__file__).resolve().parents[3]
V2 = REPO / "models" / "lightcone_regressor" / "2"
CUBES = REPO / "tests" / "training" / "lightcone" / "fixtures" / "saliency_cubes.npz"
NAME = "lightcone_regressor"
SHAPE = "16,16,128"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lcsal-models")
    write_tiny_model(root, version=1)
    shutil.copytree(V2, root / NAME / "2")
    v1 = root / NAME / "1"
    v1.mkdir()
    shutil.copy(V2 / "model.onnx", v1 / "model.onnx")
    m = json.loads((V2 / "manifest.json").read_text())
    m["version"] = 1
    del m["saliency"]
    (v1 / "manifest.json").write_text(json.dumps(m))
    return root


@pytest.fixture(scope="module")
def svc(repo, tmp_path_factory):

    s = Service(repo, tmp_path_factory.mktemp("lcsal-logs") / "service.log",
                max_file_bytes=8 * 1024 * 1024, lightcone_saliency_max_batch_rows=2)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cube() -> np.ndarray:
    """One held-out cube in mK, on the model grid (preprocessing divides by 100 again)."""
    return (np.load(CUBES)["x"][0, 0].astype(np.float32) * 100.0).astype("<f4")


def post(svc, cube, accept="application/json", **params):
    return svc.client.post("/v1/lightcones:saliency", content=cube.tobytes(),
                           params={"shape": SHAPE, **params},
                           headers={"content-type": "application/octet-stream",
                                    "accept": accept})


def direct(cube: np.ndarray, k: int, sigma: bool = False):
    t = np.zeros((1, 10), np.float32)
    t[0, k + 5 * sigma] = 1.0
    x = np.clip(cube / np.float32(100.0), -10, 10)[None, None].astype(np.float32)
    return ort_session(V2 / "saliency.onnx").run(None, {"lightcone": x, "target": t})


def test_gradient_json_is_the_graph_output(svc, cube):
    r = post(svc, cube, target="HII_EFF_FACTOR")
    assert r.status_code == 200, r.text
    body = r.json()
    g, mean, _ = direct(cube, 4)
    assert body["model"] == NAME and body["version"] == 2
    m = np.array(body["saliency"], dtype=np.float32)
    assert m.shape == (16, 16, 128)
    np.testing.assert_allclose(m, g[0, 0], rtol=1e-4, atol=1e-6 * np.abs(g).max())
    assert body["explained"] == {"target": "HII_EFF_FACTOR", "parameter": "HII_EFF_FACTOR",
                                 "output": "mean", "value": pytest.approx(float(mean[0, 4]),
                                                                          rel=1e-5),
                                 "unit": ""}
    assert body["parameters"]["HII_EFF_FACTOR"]["mean"] == pytest.approx(float(mean[0, 4]),
                                                                         rel=1e-5)
    assert len(body["grid"]["redshifts"]) == 128
    np.testing.assert_allclose(body["los_profile"]["sum"], g[0, 0].sum(axis=(0, 1)),
                               rtol=1e-3, atol=1e-5 * np.abs(g).sum())


def test_sigma_target_and_npy(svc, cube):
    r = post(svc, cube, accept="application/x-npy", target="L_X:sigma")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-npy"
    assert r.headers["x-specula-explained"] == "L_X:sigma"
    m = np.load(io.BytesIO(r.content), allow_pickle=False)
    g, _, sigma = direct(cube, 1, sigma=True)
    np.testing.assert_allclose(m, g[0, 0], rtol=1e-4, atol=1e-6 * np.abs(g).max())
    assert float(r.headers["x-specula-value"]) == pytest.approx(float(sigma[0, 1]), rel=1e-5)


def test_methods(svc, cube):
    g = direct(cube, 4)[0][0, 0]
    x = np.clip(cube / np.float32(100.0), -10, 10)
    gxi = np.array(post(svc, cube, method="gradient_x_input").json()["saliency"])
    np.testing.assert_allclose(gxi, g * x, rtol=1e-4, atol=1e-6 * np.abs(g * x).max())
    a = post(svc, cube, method="smoothgrad", samples=3, sigma=0.1, seed=7).json()
    b = post(svc, cube, method="smoothgrad", samples=3, sigma=0.1, seed=7).json()
    assert a["saliency"] == b["saliency"] and a["method"]["samples"] == 3
    assert a["method"]["noise_std"] > 0
    assert not np.allclose(np.array(a["saliency"]), g)  # the noise did something
    ig = post(svc, cube, method="integrated_gradients", steps=8, baseline="sky_mean").json()
    assert ig["method"]["baseline"] == "sky_mean" and ig["method"]["steps"] == 8
    assert np.isfinite(ig["method"]["completeness_gap"])
    assert ig["method"]["sum"] == pytest.approx(np.array(ig["saliency"]).sum(), rel=1e-3)


def test_png_is_a_figure(svc, cube):
    r = post(svc, cube, accept="image/png", target="HII_EFF_FACTOR", slice_axis="y",
             slice_index=3, los_index=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and len(r.content) > 20_000


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"target": "zeta"}, 400, "bad_target"),
    ({"target": "L_X:variance"}, 400, "bad_target"),
    ({"method": "lime"}, 400, "bad_request"),
    ({"method": "smoothgrad", "samples": 1000}, 400, "bad_request"),
    ({"method": "integrated_gradients", "baseline": "continuum"}, 400, "bad_request"),
    ({"out": "png", "slice_index": 16}, 400, "bad_request"),
    ({"out": "png", "slice_axis": "z"}, 400, "bad_request"),
    ({"out": "png", "los_index": -1}, 400, "bad_request"),
    ({"version": 1}, 409, "saliency_unavailable"),
    ({"version": 9}, 404, "model_not_found"),
])
def test_bad_requests_are_4xx_with_a_code(svc, cube, params, status, code):
    r = post(svc, cube, **params)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code


def test_bad_body_is_4xx(svc):
    r = svc.client.post("/v1/lightcones:saliency", content=b"\x00" * 12,
                        params={"shape": SHAPE})
    assert r.status_code == 422 and r.json()["code"] == "bad_shape", r.text
    r = svc.client.post("/v1/lightcones:saliency", content=b"not a cube at all")
    assert 400 <= r.status_code < 500 and r.json()["code"], r.text


def test_metered_as_saliency(svc, cube):
    before = svc.metric("specula_explain_requests_total", model=NAME, endpoint="saliency")
    assert post(svc, cube).status_code == 200
    svc.wait_for_metric("specula_explain_requests_total", before + 1, model=NAME,
                        endpoint="saliency")
    assert svc.metric("specula_explain_rows_total", model=NAME, endpoint="saliency") >= 2


def test_batch_rows_setting_bounds_every_batch(svc, cube):
    assert post(svc, cube, method="smoothgrad", samples=7).status_code == 200  # 8 rows
    labels = {"model": NAME, "version": "2", "endpoint": "saliency"}
    svc.wait_for_metric("specula_explain_batch_size_rows_count", 4, **labels)
    total = svc.metric("specula_explain_batch_size_rows_count", **labels)
    assert svc.metric("specula_explain_batch_size_rows_bucket", le="2.0", **labels) == total
