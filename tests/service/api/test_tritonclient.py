"""The real tritonclient (HTTP) against a `specula serve` process, for every model kind.

What a Triton user's code calls — server live/ready, the repository index, model readiness per
version, metadata, config, inference statistics and infer with binary tensors — answers for
the tiny spectrum classifier and the shipped lightcone_regressor v2 alike, and infer agrees
with the service's own JSON answer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

REPO = Path(__file__).resolve().parents[3]
# model: (input, one row's shape, outputs, width of the first output)
MODELS = {"spectrum_classifier": ("spectrum", [2, 4076], ["probs", "z"], 6),
          "lightcone_regressor": ("lightcone", [1, 16, 16, 128], ["theta_mean", "theta_sigma"], 5)}
pytestmark = pytest.mark.e2e


@pytest.fixture
def client(start_service, api_repo, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(api_repo, root)
    shutil.copytree(REPO / "models" / "lightcone_regressor" / "2",
                    root / "lightcone_regressor" / "2")
    svc = start_service(root)
    tc = triton.InferenceServerClient(url=svc.url.removeprefix("http://"))
    yield tc, svc
    tc.close()


def test_server_and_repository(client):
    tc, _ = client
    assert tc.is_server_live() and tc.is_server_ready()
    index = {(m["name"], m["version"], m["state"]) for m in tc.get_model_repository_index()}
    assert index == {("spectrum_classifier", "1", "READY"), ("spectrum_classifier", "2", "READY"),
                     ("lightcone_regressor", "2", "READY")}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_kind_through_tritonclient(client, model):
    tc, svc = client
    name, row, outputs, width = MODELS[model]
    assert tc.is_model_ready(model) and tc.is_model_ready(model, "2")
    assert not tc.is_model_ready(model, "7") and not tc.is_model_ready("no_such_model")

    meta = tc.get_model_metadata(model)
    assert meta["name"] == model and "2" in meta["versions"]
    assert meta["inputs"][0] == {"name": name, "datatype": "FP32", "shape": [-1, *row]}
    assert tc.get_model_metadata(model, "2")["versions"] == ["2"]

    cfg = tc.get_model_config(model)
    assert cfg["name"] == model and cfg["platform"] == "onnxruntime_onnx"
    assert cfg["max_batch_size"] > 0
    assert cfg["input"][0]["data_type"] == "TYPE_FP32" and cfg["input"][0]["dims"] == row
    assert {o["name"] for o in cfg["output"]} >= set(outputs)
    assert tc.get_model_config(model, "2")["name"] == model

    before = tc.get_inference_statistics(model, "2")["model_stats"][0]
    x = np.random.default_rng(1).normal(0, 0.3, (3, *row)).astype(np.float32)
    inp = triton.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = tc.infer(model, [inp], model_version="2",
                      outputs=[triton.InferRequestedOutput(o, binary_data=True) for o in outputs])
    first = result.as_numpy(outputs[0])
    assert first.shape == (3, width) and np.isfinite(first).all()
    assert result.get_response()["model_version"] == "2"

    json_inp = triton.InferInput(name, list(x.shape), "FP32")
    json_inp.set_data_from_numpy(x, binary_data=False)
    as_json = tc.infer(model, [json_inp]).as_numpy(outputs[0])
    np.testing.assert_allclose(as_json, first, rtol=1e-5, atol=1e-6)

    stats = tc.get_inference_statistics(model, "2")["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [(model, "2")]
    after = stats[0]
    assert after["inference_count"] == before["inference_count"] + 6
    assert (after["inference_stats"]["success"]["count"]
            == before["inference_stats"]["success"]["count"] + 2)
    everything = tc.get_inference_statistics()["model_stats"]
    assert {(s["name"], s["version"]) for s in everything} >= {(m, "2") for m in MODELS}

    with pytest.raises(InferenceServerException, match="model_not_found|no model"):
        tc.get_model_config("no_such_model")
    # what the service itself answers: the versioned infer of the same rows
    native = svc.client.post(f"/v2/models/{model}/versions/2/infer", json={
        "inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                    "data": x.ravel().tolist()}], "outputs": [{"name": outputs[0]}]})
    assert native.status_code == 200, native.text
    np.testing.assert_allclose(np.array(native.json()["outputs"][0]["data"]).reshape(3, width),
                               first, rtol=1e-5, atol=1e-6)
