"""Health, server and model metadata, readiness, OpenAPI and /metrics over real HTTP."""

from __future__ import annotations

import time

import pytest

from tests.support.http_service import MODEL, PROVIDER

pytestmark = pytest.mark.e2e


def test_live_ready_and_server_metadata(service):
    c = service.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    meta = c.get("/v2").json()
    assert meta["name"] == "specula" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_reports_versions_provider_and_contract(service):
    meta = service.client.get(f"/v2/models/{MODEL}").json()
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "spectrum", "datatype": "FP32", "shape": [-1, 2, 4076]}]
    assert [o["name"] for o in meta["outputs"]] == ["probs", "entropy", "epistemic", "z",
                                                    "z_sigma"]
    p = meta["parameters"]
    assert p["version"] == 2 and p["provider"] == PROVIDER
    assert len(p["sha256"]) == 64 and p["preprocess_version"] == "1"
    v1 = service.client.get(f"/v2/models/{MODEL}/versions/1").json()
    assert v1["versions"] == ["1"] and v1["parameters"]["sha256"] != p["sha256"]


def test_model_readiness(service):
    c = service.client
    assert c.get(f"/v2/models/{MODEL}/ready").status_code == 200
    assert c.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 200
    r = c.get(f"/v2/models/{MODEL}/versions/9/ready")
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"
    assert c.get("/v2/models/nope/ready").status_code == 404


def test_openapi_schema_is_served(service):
    paths = service.client.get("/openapi.json").json()["paths"]
    assert {"/v1/spectra:classify", "/v2/models/{name}/infer", "/v2/health/ready"} <= set(paths)


def test_metrics_exposes_model_info_and_labelled_series(service):
    text = service.client.get("/metrics").text
    assert f'specula_model_info{{model="spectrum_classifier",provider="{PROVIDER}"' in text
    for name in ("specula_requests_total", "specula_request_duration_seconds",
                 "specula_queue_duration_seconds", "specula_preprocess_duration_seconds",
                 "specula_compute_duration_seconds", "specula_batch_size_rows",
                 "specula_queue_depth_rows", "specula_inference_items_total"):
        assert f"# HELP {name}" in text, name


def test_traceparent_is_echoed_in_the_same_trace_and_logged(service):
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = service.client.get("/v2/health/live", headers={"traceparent": parent})
    version, trace, span, flags = r.headers["traceparent"].split("-")
    assert (version, trace, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    assert span != "b7ad6b7169203331"
    logged = f'"span_id":"{span}","parent_id":"b7ad6b7169203331"'
    end = time.monotonic() + 10  # the access line is written just after the response is sent
    while logged not in service.log_path.read_text() and time.monotonic() < end:
        time.sleep(0.05)
    assert logged in service.log_path.read_text()
    fresh = service.client.get("/v2/health/live", headers={"traceparent": "garbage"})
    assert fresh.headers["traceparent"].split("-")[1] != trace  # invalid → new trace
