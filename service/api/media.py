"""What the native endpoints answer in: the media types, the ``out``/``Accept`` choice
between them, the OpenAPI shape of such a 200, and the ``.npy`` body (no pickle)."""

from __future__ import annotations

import io

import numpy as np
from fastapi import Request

NPY, PNG, JSON = "application/x-npy", "image/png", "application/json"
# what the 200 can be: ``out`` or ``Accept`` picks one
BINARY = {"schema": {"type": "string", "format": "binary"}}
MAPS_200 = {200: {"content": {JSON: {}, NPY: BINARY, PNG: BINARY}}}
FIGURES_200 = {200: {"content": {JSON: {}, PNG: BINARY}}}


def wants(request: Request, fmt: str | None) -> str:
    """The media type to answer in: ``out`` (json | npy | png) if given, else ``Accept``."""
    if fmt:
        return {"json": JSON, "npy": NPY, "png": PNG}.get(fmt, JSON)
    accept = request.headers.get("accept", "")
    for media in (PNG, NPY):
        if media in accept:
            return media
    return JSON


def npy_bytes(a: np.ndarray) -> bytes:
    """``a`` as the bytes of a ``.npy`` file."""
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()
