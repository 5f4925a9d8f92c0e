"""JSON is reserved in the in-flight byte budget at what it takes decoded, before decoding.

Why: the budget (``SPECULA_MAX_INFLIGHT_BYTES``, service/api/middleware.py) counts declared
bodies, but a JSON body costs many times its size once parsed. Measured with tracemalloc
(tests/service/api/test_api_json_memory.py holds it): orjson's parse tree alone peaks at ~14x the
text whatever it holds; the Python objects it builds add up to ~24x more (an empty ``{}``:
3 bytes of text, a 64-byte dict and its 8-byte list slot), and numbers become float64 arrays
(at most one per 2 bytes of text — a digit and a comma — so 4x). Six 130 MB JSON bodies in
parallel peaked at 7.7 GB against a 1 GiB budget. So each JSON document (an OIP request
without binary tensors, or its JSON header; a JSON spectrum file, raw or in a multipart part,
gzipped or not) is reserved at :data:`JSON_DECODE_FACTOR` times its size before it is parsed:
413 ``too_large`` when that alone passes the budget, 503 ``overloaded`` + ``Retry-After``
when the requests in flight leave no room now. ``.npy`` and OIP binary tensors decode to
their own size and are the way to send large arrays.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from service.io.source import GZIP_MAGIC
from service.spectra.readers.arrays import looks_like_json

from .errors import ApiError
from .middleware import SCOPE_KEY

JSON_DECODE_FACTOR = 40  # measured worst case 36x (empty objects), numbers 14-21x
GZIP_PEEK = 4096  # compressed bytes inflated to see whether a gzipped upload is JSON


def gzip_json_size(data: bytes) -> int:
    """The inflated size of a gzipped JSON document, 0 when the upload is something else.

    The size is the gzip trailer's ISIZE (a declaration: a stream that lies about it is still
    bounded per file by ``SPECULA_MAX_FILE_BYTES`` when it is inflated); only the first
    :data:`GZIP_PEEK` bytes are inflated here, to see what the stream holds."""
    try:
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:GZIP_PEEK], 64)
    except zlib.error:
        return 0  # not ours to judge: the reader says corrupt_file
    if not looks_like_json(head) or len(data) < 18:
        return 0
    return max(int.from_bytes(data[-4:], "little"), len(data))


def json_bytes(data: bytes) -> int:
    """Bytes of JSON text an upload holds (its size, or inflated size); 0 if not JSON."""
    if data[:2] == GZIP_MAGIC:
        return gzip_json_size(data)
    return len(data) if looks_like_json(data) else 0


def oip_json_bytes(body: bytes, header_length: str | None) -> int:
    """Bytes of JSON in an OIP infer body: all of it, or the binary extension's header (an
    unparsable length counts the whole body; the decoder then refuses it)."""
    if header_length is not None and header_length.isdigit():
        return min(int(header_length), len(body))
    return len(body)


def reserve_json(request: Request, n_json: int) -> None:
    """Reserve what ``n_json`` bytes of JSON take decoded, for the rest of this request, or
    raise the 413/503 that says why not. Call before parsing."""
    charge = request.scope.get(SCOPE_KEY)
    if charge is None or n_json <= 0:  # no budget middleware (a bare app), or no JSON
        return
    need = JSON_DECODE_FACTOR * n_json
    why = charge.reserve(need)
    if why is None:
        return
    limit = charge.middleware.max_inflight
    if why == "too_large":
        raise ApiError(413, "too_large", f"{n_json} bytes of JSON take up to {need} bytes "
                       f"decoded, more than the in-flight limit of {limit} bytes "
                       "(SPECULA_MAX_INFLIGHT_BYTES); send large arrays as .npy or OIP "
                       "binary tensors")
    retry = request.app.state.settings.retry_after_s
    raise ApiError(503, "overloaded", f"{n_json} bytes of JSON take up to {need} bytes "
                   f"decoded; {charge.middleware.inflight} bytes in flight; retry later "
                   "(SPECULA_MAX_INFLIGHT_BYTES)", headers={"Retry-After": str(retry)})
