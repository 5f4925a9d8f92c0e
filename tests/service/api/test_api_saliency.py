"""POST /v1/spectra:saliency and GET/POST /v1/spectra:introspect over real HTTP.

The repository holds a tiny (random-weight) SpectrumNet ensemble exported like the shipped
model, with saliency.onnx + introspect.onnx beside it (version 1), and the same model without
them (version 2): the service must explain v1 and answer v2 with 409 saliency_unavailable while
classifying both.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings

import httpx
import numpy as np
import pytest
import torch

from service.spectra import DEFAULT_GRID, PREPROCESS_VERSION, Source, preprocess, read_spectra
from tests.support.http_service import ADMIN_TOKEN, Service
from training.common.ort import ort_session
from training.common.saliency import add_to_manifest
from training.spectra.config import ModelConfig
from training.spectra.export_onnx import manifest_io, sha256_file
from training.spectra.export_saliency import export_saliency
from training.spectra.labels import LABELS, TOP_CLASSES
from training.spectra.model import OUTPUT_NAMES, Ensemble, SpectrumNet

pytestmark = pytest.mark.e2e
URL = "/v1/spectra:saliency"
NPIX = DEFAULT_GRID.npix
K = len(LABELS)


def write_model(vdir, ens: Ensemble, version: int) -> None:
    vdir.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ens, (torch.zeros(2, 2, NPIX),), str(vdir / "model.onnx"),
                          input_names=["spectrum"], output_names=OUTPUT_NAMES, dynamo=False,
                          dynamic_axes={n: {0: "N"} for n in ["spectrum", *OUTPUT_NAMES]})
    inputs, outputs = manifest_io(K, NPIX)
    manifest = {"name": "spectrum_classifier", "version": version,
                "kind": "spectrum-classifier", "file": "model.onnx",
                "sha256": sha256_file(vdir / "model.onnx"), "inputs": inputs,
                "outputs": outputs, "labels": LABELS, "top_classes": TOP_CLASSES,
                "grid": DEFAULT_GRID.to_manifest(), "preprocess_version": PREPROCESS_VERSION,
                "training": {"note": "random weights (tests/service/api/test_api_saliency.py)"},
                "metrics": {}}
    (vdir / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def saliency_repo(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(widths=[8, 8, 8], stem_channels=8, head_hidden=16)
    ens = Ensemble([SpectrumNet(cfg, K, NPIX).eval() for _ in range(2)], 1.2, 1.0).eval()
    root = tmp_path_factory.mktemp("saliency-models")
    v1 = root / "spectrum_classifier" / "1"
    write_model(v1, ens, 1)
    add_to_manifest(v1, export_saliency(ens, v1, NPIX, K, dynamo=False))
    v2 = root / "spectrum_classifier" / "2"
    v2.mkdir(parents=True)
    shutil.copy(v1 / "model.onnx", v2 / "model.onnx")
    m = json.loads((v1 / "manifest.json").read_text())
    del m["saliency"]
    (v2 / "manifest.json").write_text(json.dumps({**m, "version": 2}))
    return root


@pytest.fixture(scope="module")
def svc(saliency_repo, tmp_path_factory):

    s = Service(saliency_repo, tmp_path_factory.mktemp("sal-logs") / "service.log",
                max_batch_size=64)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sdss_bytes(sdss_spec_path) -> bytes:
    return sdss_spec_path.read_bytes()


def post(svc, body: bytes, **params):
    headers = params.pop("headers", {})
    return svc.client.post(URL, params={"version": 1, **params}, content=body, headers=headers)


def test_gradient_json_is_the_graph_output_on_the_model_grid(svc, saliency_repo, sdss_bytes,
                                                            sdss_spec_path):
    r = post(svc, sdss_bytes, target="top")  # explicit: the predicted class, as before
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "spectrum_classifier" and body["version"] == 1
    assert len(body["wavelength"]) == NPIX
    (res,) = body["results"]
    assert res["explained"]["asked"] == "top"
    assert res["explained"]["target"] == res["prediction"]["class"]
    assert res["explained"]["value"] == pytest.approx(res["prediction"]["class_probability"],
                                                      rel=1e-4)
    flux = np.array(res["saliency"]["flux"], dtype=np.float32)
    # the same preprocessed input through saliency.onnx directly gives the same map
    x = preprocess(read_spectra(Source.from_path(sdss_spec_path))[1][0]).x
    t = np.zeros((1, K + 1), np.float32)
    t[0, :K] = [lab["top"] == res["explained"]["target"] for lab in LABELS]
    sess = ort_session(saliency_repo / "spectrum_classifier" / "1" / "saliency.onnx")
    ref = sess.run(["saliency"], {"spectrum": x[None], "target": t})[0][0]
    np.testing.assert_allclose(flux, ref[0], rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    assert np.abs(flux).max() > 0


def test_methods_and_targets(svc, sdss_bytes):
    sg = post(svc, sdss_bytes, method="smoothgrad", samples=3, sigma=0.1).json()["results"][0]
    assert sg["method"] == {"name": "smoothgrad", "samples": 3, "sigma": 0.1, "seed": 0,
                            "noise_std": pytest.approx(sg["method"]["noise_std"])}
    assert sg["method"]["noise_std"] > 0
    ig = post(svc, sdss_bytes, method="integrated_gradients", steps=8,
              target="QSO", scale="log_probability").json()["results"][0]
    assert ig["explained"]["target"] == "QSO" and ig["explained"]["scale"] == "log_probability"
    assert np.isfinite(ig["method"]["completeness_gap"]) and ig["method"]["steps"] == 8
    gxi = post(svc, sdss_bytes, method="gradient_x_input", target="STAR:A").json()["results"][0]
    assert gxi["explained"]["target"] == "STAR:A"
    z = post(svc, sdss_bytes, target="redshift").json()["results"][0]
    assert z["explained"]["target"] == "redshift" and z["explained"]["scale"] == "value"
    assert z["explained"]["value"] == pytest.approx(z["prediction"]["z"], rel=1e-4, abs=1e-6)


def test_npy_and_png(svc, sdss_bytes):
    r = post(svc, sdss_bytes, headers={"accept": "application/x-npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    maps = np.load(io.BytesIO(r.content))
    assert maps.shape == (1, 2, NPIX) and maps.dtype == np.float32
    assert r.headers["x-specula-version"] == "1"
    r = post(svc, sdss_bytes, target="redshift", headers={"accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and len(r.content) > 20_000


@pytest.mark.parametrize("params, code", [
    ({"target": "NEBULA"}, "bad_target"),
    ({"method": "occlusion"}, "bad_request"),
    ({"method": "smoothgrad", "samples": 0}, "bad_request"),
    ({"target": "redshift", "scale": "logit"}, "bad_request"),
    ({"index": 3}, "bad_request"),
])
def test_bad_parameters_are_400(svc, sdss_bytes, params, code):
    r = post(svc, sdss_bytes, **params)
    assert r.status_code == 400 and r.json()["code"] == code, r.text


def test_model_without_saliency_graph_is_409_and_still_classifies(svc, sdss_bytes):
    r = post(svc, sdss_bytes, version=2)
    assert r.status_code == 409 and r.json()["code"] == "saliency_unavailable", r.text
    r = svc.client.get("/v1/spectra:introspect", params={"version": 2})
    assert r.status_code == 409
    r = svc.client.post("/v1/spectra:classify", params={"version": 2}, content=sdss_bytes)
    assert r.status_code == 200 and r.json()["version"] == 2


def test_introspection_filters_and_activations(svc, sdss_bytes):
    r = svc.client.get("/v1/spectra:introspect", params={"version": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert np.array(body["filters"]).shape == (2, 8, 2, 8)  # members, channels, inputs, taps
    assert body["layers"] == ["stem", "block1", "block2", "block3"]
    r = svc.client.post("/v1/spectra:introspect", params={"version": 1, "layer": "block2"},
                        content=sdss_bytes)
    assert r.status_code == 200, r.text
    acts = np.array(r.json()["activations"])
    assert acts.shape[:2] == (2, 8) and (acts >= 0).all()
    r = svc.client.post("/v1/spectra:introspect", params={"version": 1, "layer": "stem",
                                                          "out": "png"}, content=sdss_bytes)
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    r = svc.client.post("/v1/spectra:introspect", params={"version": 1, "layer": "fc"},
                        content=sdss_bytes)
    assert r.status_code == 400 and r.json()["code"] == "bad_layer"


def test_introspection_runs_through_its_own_batched_queue(svc, sdss_bytes):
    """Concurrent activation requests are rows of the introspect queue (endpoint label
    'introspect'), each answered with its own spectrum's activations."""
    from concurrent.futures import ThreadPoolExecutor

    rows_before = svc.metric("specula_explain_rows_total", endpoint="introspect")

    def one(layer: str):
        with httpx.Client(base_url=svc.url, timeout=60) as c:
            return c.post("/v1/spectra:introspect", params={"version": 1, "layer": layer},
                          content=sdss_bytes)

    with ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(one, ["stem", "block1", "block2", "block3"]))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    assert [r.json()["layer"] for r in rs] == ["stem", "block1", "block2", "block3"]
    stem = np.array(rs[0].json()["activations"])
    again = np.array(one("stem").json()["activations"])
    np.testing.assert_allclose(stem, again, rtol=1e-6)  # batching does not mix rows up
    svc.wait_for_metric("specula_explain_rows_total", rows_before + 5, endpoint="introspect")


def test_saliency_is_metered_apart_from_classification(svc, sdss_bytes):
    items_before = svc.metric("specula_inference_items_total")
    before = svc.metric("specula_explain_requests_total", endpoint="saliency",
                        outcome="success")
    rows_before = svc.metric("specula_explain_rows_total", endpoint="saliency")
    assert post(svc, sdss_bytes, method="smoothgrad", samples=4).status_code == 200
    assert svc.metric("specula_explain_requests_total", endpoint="saliency",
                      outcome="success") == before + 1
    # 1 forward row for the prediction + 4 noisy gradient rows, in the saliency family only
    assert svc.metric("specula_explain_rows_total", endpoint="saliency") == rows_before + 5
    assert svc.metric("specula_inference_items_total") == items_before


def test_saliency_added_beside_a_served_model_is_picked_up_by_reload(saliency_repo, sdss_bytes,
                                                                     start_service, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(saliency_repo / "spectrum_classifier" / "2", repo / "spectrum_classifier" / "2")
    svc = start_service(repo)
    assert post(svc, sdss_bytes, version=2).status_code == 409
    v1 = saliency_repo / "spectrum_classifier" / "1"
    v2 = repo / "spectrum_classifier" / "2"
    for f in ("saliency.onnx", "introspect.onnx"):
        shutil.copy(v1 / f, v2 / f)
    entry = json.loads((v1 / "manifest.json").read_text())["saliency"]
    add_to_manifest(v2, entry)  # model.onnx and its sha256 unchanged: only the entry is new
    r = svc.client.post("/v1/admin/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200, r.text
    r = post(svc, sdss_bytes, version=2)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
