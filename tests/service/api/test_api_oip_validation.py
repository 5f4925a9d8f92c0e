"""What the OIP infer route refuses, over real HTTP (a `specula serve` process on loopback).

NaN/inf in a tensor (binary or JSON), a JSON value beyond its datatype (1e39 as FP32, 300 as
UINT8), an input named twice and a ``parameters.timeout`` that is not a non-negative integer
were answered 200 (NaN/inf with ``null`` outputs) or 500; each is a 400 with a code. Both model
kinds: the repository holds the tiny spectrum classifier and the shipped lightcone_regressor v2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.http_service import Service
from tests.support.tiny_classifier import write_tiny_model

REPO = Path(__file__).resolve().parents[3]
LIGHTCONE_V2 = REPO / "models" / "lightcone_regressor" / "2"
INPUTS = {"spectrum_classifier": ("spectrum", [1, 2, 4076]),
          "lightcone_regressor": ("lightcone", [1, 1, 16, 16, 128])}
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    root = tmp_path_factory.mktemp("oip-validation-models")
    write_tiny_model(root, version=1)
    shutil.copytree(LIGHTCONE_V2, root / "lightcone_regressor" / "2")
    s = Service(root, tmp_path_factory.mktemp("oip-validation-logs") / "service.log")
    yield s
    s.stop()


def zeros(model: str) -> np.ndarray:
    return np.zeros(INPUTS[model][1], "<f4")


def post_binary(svc, model: str, x: np.ndarray, **parameters):
    """x as a binary tensor (Inference-Header-Content-Length), as tritonclient sends it."""
    header = json.dumps({"parameters": parameters, "inputs": [
        {"name": INPUTS[model][0], "shape": list(x.shape), "datatype": "FP32",
         "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    return svc.client.post(f"/v2/models/{model}/infer", content=header + x.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(header))})


def post_json(svc, model: str, inputs: list[dict], **parameters):
    """A JSON request written by Python's json (NaN/inf become the bare words NaN/Infinity,
    as tritonclient writes them)."""
    doc = json.dumps({"parameters": parameters, "inputs": inputs}).encode()
    return svc.client.post(f"/v2/models/{model}/infer", content=doc,
                           headers={"content-type": "application/json"})


def json_input(model: str, values: list, datatype: str = "FP32") -> dict:
    name, shape = INPUTS[model]
    return {"name": name, "shape": shape, "datatype": datatype, "data": values}


def refused(r, code: str) -> bool:
    return r.status_code == 400 and r.json()["code"] == code


@pytest.mark.parametrize("model", list(INPUTS))
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_is_refused_binary_and_json_alike(svc, model, value):
    x = zeros(model)
    assert post_binary(svc, model, x).status_code == 200  # the same request, finite: answered
    x.flat[7] = value
    binary = post_binary(svc, model, x)
    as_json = post_json(svc, model, [json_input(model, x.reshape(-1).tolist())])
    assert refused(binary, "non_finite"), binary.text
    assert (as_json.status_code, as_json.json()["code"]) == (binary.status_code, "non_finite")


@pytest.mark.parametrize("model", list(INPUTS))
def test_json_values_beyond_fp32_are_non_finite(svc, model):
    values = zeros(model).reshape(-1).tolist()
    values[3] = 1e39  # finite in JSON and float64, inf once converted to FP32
    assert refused(post_json(svc, model, [json_input(model, values)]), "non_finite")
    name = INPUTS[model][0]  # beyond float64 too: the JSON parser itself overflows
    doc = (f'{{"inputs": [{{"name": "{name}", "shape": [1], "datatype": "FP32", '
           f'"data": [1e999]}}]}}').encode()
    r = svc.client.post(f"/v2/models/{model}/infer", content=doc)
    assert refused(r, "non_finite"), r.text


def test_json_integer_beyond_its_datatype_is_a_400_not_a_500(svc):
    """300 as UINT8 raised OverflowError in the decoder: a 500."""
    r = post_json(svc, "spectrum_classifier",
                  [{"name": "spectrum", "shape": [1], "datatype": "UINT8", "data": [300]}])
    assert refused(r, "bad_dtype"), r.text


@pytest.mark.parametrize("model", list(INPUTS))
def test_an_input_named_twice_is_refused(svc, model):
    values = zeros(model).reshape(-1).tolist()
    one = json_input(model, values)
    assert post_json(svc, model, [one]).status_code == 200
    r = post_json(svc, model, [one, one])
    assert refused(r, "bad_request") and "twice" in r.json()["error"], r.text


@pytest.mark.parametrize("timeout", [-1, "x", 1.5, True, [5]])
def test_timeout_must_be_a_non_negative_integer(svc, timeout):
    for model in INPUTS:
        r = post_binary(svc, model, zeros(model), timeout=timeout)
        assert refused(r, "bad_request") and "timeout" in r.json()["error"], (model, r.text)


@pytest.mark.parametrize("timeout", [0, 60_000_000])
def test_valid_timeouts_are_answered(svc, timeout):
    for model in INPUTS:
        r = post_binary(svc, model, zeros(model), timeout=timeout)
        assert r.status_code == 200, (model, r.text)
