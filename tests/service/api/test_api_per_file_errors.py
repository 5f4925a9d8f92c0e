"""One bad file in a multipart upload costs only its own results, never the others'.

A real `specula serve` over loopback, the real SDSS spectrum and a garbage file: the buffered
response and the NDJSON stream give the same items, a failed file's error in its place.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e
URL = "/v1/spectra:classify"
GARBAGE = b"these bytes are no spectrum of any format \x00\x01\x02"


def upload(sdss: bytes) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", ("first.fits", sdss)), ("files", ("garbage.bin", GARBAGE)),
            ("files", ("empty.fits", b"")), ("files", ("second.fits", sdss))]


def test_a_bad_file_is_an_error_item_in_place_and_the_good_files_are_classified(
        service, sdss_spec_path):
    r = service.client.post(URL, files=upload(sdss_spec_path.read_bytes()))
    assert r.status_code == 200, r.text
    first, garbage, empty, second = r.json()["results"]
    assert first["source"] == "first.fits" and first["object_id"] == "1198-52669-0063"
    assert second["source"] == "second.fits"
    assert second["probabilities"] == first["probabilities"]
    assert garbage == {"source": "garbage.bin", "error": {
        "code": "unknown_format", "detail": garbage["error"]["detail"], "source": "garbage.bin"}}
    assert empty == {"source": "empty.fits", "error": {
        "code": "empty_file", "detail": "the file is empty (0 bytes)", "source": "empty.fits"}}


def test_the_stream_gives_the_same_items_as_the_buffered_response(service, sdss_spec_path):
    files = upload(sdss_spec_path.read_bytes())
    buffered = service.client.post(URL, files=files).json()["results"]
    r = service.client.post(URL, params={"stream": "true"}, files=files)
    assert r.status_code == 200
    streamed = [json.loads(line) for line in r.text.splitlines()]  # in finishing order

    def by_source(items):
        return sorted(items, key=lambda item: item["source"])

    assert by_source(streamed) == by_source(buffered)


def test_when_every_file_fails_the_request_gets_the_first_failure(service):
    files = [("files", ("garbage.bin", GARBAGE)), ("files", ("empty.fits", b""))]
    r = service.client.post(URL, files=files)
    assert r.status_code == 415
    assert r.json()["code"] == "unknown_format" and r.json()["source"] == "garbage.bin"
