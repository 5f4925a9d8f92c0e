"""Schemathesis hooks for test_openapi_contract.py (loaded through SCHEMATHESIS_HOOKS).

Schemathesis has no reader for ``application/x-ndjson``, so without one it skips the schema
check of ``/v1/spectra:classify?stream=true``. This reads the stream as the array of its lines,
which is how the route's schema describes it (service/api/routers/spectra.py, STREAM_DOC).
"""

from __future__ import annotations

import json

import schemathesis


@schemathesis.deserializer("application/x-ndjson")
def ndjson_lines(ctx, response) -> list:
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]
