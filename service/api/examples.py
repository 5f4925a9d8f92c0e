"""Examples of the OpenAPI document (Swagger UI, ReDoc): real answers of the shipped models
(spectrum_classifier v4, lightcone_regressor v3) to the shared files spec-1198-52669-0063.fits
(SDSS plate 1198, MJD 52669, fibre 63: an F star) and simrun_0.h5 (a 21cmFAST lightcone),
recorded from the service itself. Where an answer has long arrays they are cut to a few values,
and the example's summary says which ones. The values live in examples.json beside this
module (data, not code). Each is an OpenAPI ``examples`` map (name → ``summary``,
``description``, ``value``); tests/service/api/test_openapi_examples.py checks every value
against its schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_DATA: dict[str, Any] = json.loads(Path(__file__).with_name("examples.json").read_text("utf-8"))

CLASSIFY: dict[str, Any] = _DATA["CLASSIFY"]
CLASSIFY_STREAM: dict[str, Any] = _DATA["CLASSIFY_STREAM"]
SPECTRA_SALIENCY: dict[str, Any] = _DATA["SPECTRA_SALIENCY"]
SPECTRA_FILTERS: dict[str, Any] = _DATA["SPECTRA_FILTERS"]
SPECTRA_ACTIVATIONS: dict[str, Any] = _DATA["SPECTRA_ACTIVATIONS"]
LIGHTCONE_INFER: dict[str, Any] = _DATA["LIGHTCONE_INFER"]
LIGHTCONE_SALIENCY: dict[str, Any] = _DATA["LIGHTCONE_SALIENCY"]
MODEL_METADATA: dict[str, Any] = _DATA["MODEL_METADATA"]
MODEL_VERSION_METADATA: dict[str, Any] = _DATA["MODEL_VERSION_METADATA"]
MODEL_READY: dict[str, Any] = _DATA["MODEL_READY"]
MODEL_VERSION_READY: dict[str, Any] = _DATA["MODEL_VERSION_READY"]
MODEL_CONFIG: dict[str, Any] = _DATA["MODEL_CONFIG"]
MODEL_VERSION_CONFIG: dict[str, Any] = _DATA["MODEL_VERSION_CONFIG"]
INFER_REQUEST: dict[str, Any] = _DATA["INFER_REQUEST"]
INFER_RESPONSE: dict[str, Any] = _DATA["INFER_RESPONSE"]
MODEL_STATS: dict[str, Any] = _DATA["MODEL_STATS"]
MODEL_VERSION_STATS: dict[str, Any] = _DATA["MODEL_VERSION_STATS"]
MODELS_STATS: dict[str, Any] = _DATA["MODELS_STATS"]
SERVER_LIVE: dict[str, Any] = _DATA["SERVER_LIVE"]
SERVER_READY: dict[str, Any] = _DATA["SERVER_READY"]
SERVER_METADATA: dict[str, Any] = _DATA["SERVER_METADATA"]
REPOSITORY_INDEX: dict[str, Any] = _DATA["REPOSITORY_INDEX"]
REPOSITORY_LOAD: dict[str, Any] = _DATA["REPOSITORY_LOAD"]
REPOSITORY_RELOAD: dict[str, Any] = _DATA["REPOSITORY_RELOAD"]
SPECTRUM_JSON_BODY: dict[str, Any] = _DATA["SPECTRUM_JSON_BODY"]
# status → example error body (JSON object keys are strings)
ERRORS: dict[int, dict[str, str]] = {int(k): v for k, v in _DATA["ERRORS"].items()}
LIGHTCONE_422: dict[str, str] = _DATA["LIGHTCONE_422"]
RELOAD_409: dict[str, Any] = _DATA["RELOAD_409"]
