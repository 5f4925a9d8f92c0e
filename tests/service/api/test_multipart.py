"""The multipart reader the classify and saliency routes use (service/api/multipart.py):
every file part, in order, byte for byte; bad forms are 400s with a code, never a 500."""

from __future__ import annotations

import httpx
import pytest

from service.api.errors import ApiError
from service.api.multipart import parse_multipart


def encode(files: list[tuple[str, str | None, bytes]], data: dict | None = None):
    """A real multipart body, as httpx (the tests' client) writes it."""
    req = httpx.Request("POST", "http://x/", data=data, files=[
        ("files", (name, body, ctype) if ctype else (name, body)) for name, ctype, body in files])
    return req.read(), req.headers["content-type"]


def test_every_file_part_in_order_byte_for_byte_and_fields_are_ignored():
    blobs = [bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n", b"SIMPLE  =", b""]
    body, ctype = encode([("a.fits", "application/fits", blobs[0]),
                          ("b \u00e9t\u00e9.fits", None, blobs[1]),
                          ("c.npy", "application/octet-stream", blobs[2])],
                         data={"note": "not a file"})
    parts = parse_multipart(body, ctype, max_parts=10)
    assert [p.filename for p in parts] == ["a.fits", "b \u00e9t\u00e9.fits", "c.npy"]
    assert [p.data for p in parts] == blobs
    assert parts[0].content_type == "application/fits" and parts[0].name == "files"


@pytest.mark.parametrize("body, ctype, what", [
    (b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\nx",
     "multipart/form-data", "without a boundary"),
    (b"garbage that is not multipart at all", "multipart/form-data; boundary=b", "malformed"),
    (b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b",
     "Content-Disposition"),
])
def test_a_bad_form_is_a_400(body, ctype, what):
    with pytest.raises(ApiError) as err:
        parse_multipart(body, ctype, max_parts=10)
    assert err.value.status == 400 and err.value.code == "bad_request"
    assert what in err.value.detail


def test_more_parts_than_allowed_is_a_400():
    body, ctype = encode([(f"{i}.fits", None, b"x") for i in range(4)])
    assert len(parse_multipart(body, ctype, max_parts=4)) == 4
    with pytest.raises(ApiError, match="SPECULA_MAX_FILES"):
        parse_multipart(body, ctype, max_parts=3)
