"""Open Inference Protocol v2 tensors: JSON and the binary tensor data extension.

Binary extension (Triton's ``binary_tensor_data``): the body is a JSON header of
``Inference-Header-Content-Length`` bytes, followed by the raw little-endian bytes of each
input whose ``parameters.binary_data_size`` is set, in input order. Responses use the same
layout for outputs requested with ``binary_data: true``. Every malformed tensor is a 400 with a
code, never a 500.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from .errors import ApiError

HEADER_LENGTH = "inference-header-content-length"
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("<u1"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
MANIFEST_TO_OIP = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64",
                   "int32": "INT32", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}
NUMPY_TO_OIP = {v: k for k, v in DATATYPES.items()}


class InputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = {}
    data: Any = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = {}


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = {}
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None


def bad(detail: str, code: str = "bad_tensor") -> ApiError:
    return ApiError(400, code, detail)


def is_non_finite_number(header: bytes, exc: orjson.JSONDecodeError) -> bool:
    """Whether the JSON is invalid only where a number is NaN or ±Infinity (Python's
    ``json.dumps``, and so tritonclient's JSON tensors, write them as those bare words) or
    overflows float64 (1e999): a non-finite value, refused as the binary path refuses it."""
    return header.startswith((b"NaN", b"Infinity"), exc.pos) or "infinity" in exc.msg


def parse_header(header: bytes) -> InferRequest:
    """The JSON part of the request, validated; a non-finite number is ``non_finite`` (the
    code every other path gives NaN/inf), any other bad JSON ``bad_request``."""
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        if is_non_finite_number(header, exc):
            raise bad("a JSON number is NaN or inf (or beyond float64)", "non_finite") from None
        raise bad(f"invalid inference request: {exc}", "bad_request") from None
    try:
        return InferRequest.model_validate(doc)
    except ValidationError as exc:
        raise bad(f"invalid inference request: {exc}", "bad_request") from None


def check_timeout(parameters: dict[str, Any]) -> None:
    """Triton's ``parameters.timeout`` is a non-negative integer of microseconds (0: none).
    Anything else used to be ignored silently: a client that believed it had set a deadline
    had none, so it is refused instead."""
    t = parameters.get("timeout")
    if t is not None and (type(t) is not int or t < 0):  # type(): True is not a timeout
        raise bad(f"parameters.timeout must be a non-negative integer (microseconds), got "
                  f"{t!r}", "bad_request")


def request_deadline(parameters: dict[str, Any], deadline: float | None) -> float | None:
    """The earlier of ``deadline`` (the timeout header's) and Triton's per-request
    ``parameters.timeout`` (µs, 0: none), as a ``time.monotonic()`` instant."""
    timeout_us = parameters.get("timeout")
    if isinstance(timeout_us, int) and timeout_us > 0:
        t = time.monotonic() + timeout_us / 1e6
        return t if deadline is None else min(deadline, t)
    return deadline


def content_length(request: Request, limit: int) -> int:
    """The body size a request declares, for a route that reserves memory for the body
    before reading it: 411 without one, 400 when empty, 413 over ``limit``."""
    raw = request.headers.get("content-length")
    if raw is None or not raw.isdigit():
        raise ApiError(411, "length_required", "send Content-Length: cubes are sized before "
                       "they are read")
    n = int(raw)
    if n == 0:
        raise ApiError(400, "bad_request", "empty body: send the cube as the request body")
    if n > limit:
        raise ApiError(413, "too_large", f"{n} bytes > limit {limit} (SPECULA_MAX_FILE_BYTES)")
    return n


def check_finite(name: str, datatype: str, arr: np.ndarray) -> None:
    """NaN/inf in a float tensor is ``non_finite``, as /v1 refuses it, whatever the encoding:
    binary bytes carry them as they are, and a JSON number beyond the datatype's range (1e39
    as FP32) becomes inf on conversion. Unrefused, they reached the model and came back as
    ``null`` outputs with a 200."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise bad(f"input {name!r}: NaN or inf in the data (or a value beyond {datatype} "
                  "range)", "non_finite")


def decode_infer_request(body: bytes, header_length: str | None
                         ) -> tuple[InferRequest, dict[str, np.ndarray]]:
    """Parse a JSON or binary-extension infer request into (request, {input name: array})."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise bad(f"bad Inference-Header-Content-Length {header_length!r}", "bad_request")
        if not 0 < n <= len(body):
            raise bad(f"Inference-Header-Content-Length {n} outside body of {len(body)} bytes",
                      "bad_request")
        header, binary = body[:n], memoryview(body)[n:]
    else:
        header, binary = body, memoryview(b"")
    req = parse_header(header)
    check_timeout(req.parameters)
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for t in req.inputs:
        if t.name in arrays:
            raise bad(f"input {t.name!r} given twice", "bad_request")
        dtype = DATATYPES.get(t.datatype)
        if dtype is None:
            raise bad(f"input {t.name!r}: unsupported datatype {t.datatype!r}", "bad_dtype")
        if any(d < 0 for d in t.shape):
            raise bad(f"input {t.name!r}: negative dimension in shape {t.shape}", "bad_shape")
        count = math.prod(t.shape)
        size = t.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size != count * dtype.itemsize:
                raise bad(f"input {t.name!r}: binary_data_size {size} != {count} × "
                          f"{dtype.itemsize} bytes for shape {t.shape}", "bad_shape")
            if offset + size > len(binary):
                raise bad(f"input {t.name!r}: body holds {len(binary) - offset} binary bytes,"
                          f" {size} declared", "bad_shape")
            arr = np.frombuffer(binary[offset:offset + size], dtype=dtype)
            offset += size
        else:
            if t.data is None:
                raise bad(f"input {t.name!r}: neither data nor binary_data_size given")
            try:
                arr = np.asarray(t.data, dtype=dtype)
            except (ValueError, TypeError, OverflowError) as exc:  # 300 as UINT8, 2**70 as INT64
                raise bad(f"input {t.name!r}: data not {t.datatype}: {exc}", "bad_dtype")
            if arr.size != count:
                raise bad(f"input {t.name!r}: {arr.size} values for shape {t.shape}",
                          "bad_shape")
        check_finite(t.name, t.datatype, arr)
        arrays[t.name] = arr.reshape(t.shape)
    if offset != len(binary):
        raise bad(f"{len(binary) - offset} unclaimed bytes after the binary inputs", "bad_shape")
    return req, arrays


def encode_infer_response(model: str, version: int, req: InferRequest,
                          outputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """(body, extra headers); binary when the request asked for any binary output."""
    binary_default = bool(req.parameters.get("binary_data_output", False))
    # (name, parameters) pairs: no pydantic object per output on the hot path
    wanted = ([(o.name, o.parameters) for o in req.outputs] if req.outputs
              else [(k, {}) for k in outputs])
    header_outputs, chunks = [], []
    for name, params in wanted:
        if name not in outputs:
            raise bad(f"unknown output {name!r}; model has {sorted(outputs)}", "bad_request")
        arr = np.ascontiguousarray(outputs[name])
        datatype = NUMPY_TO_OIP[arr.dtype.newbyteorder("<")]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if params.get("binary_data", binary_default):
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        header_outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": str(version),
                           "outputs": header_outputs}
    if req.id is not None:
        doc["id"] = req.id
    header = orjson.dumps(doc)
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {"content-type": "application/octet-stream",
                                         "inference-header-content-length": str(len(header))}
