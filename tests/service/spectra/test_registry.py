"""Every reader is registered once, and on every real or written file exactly one wins."""

from __future__ import annotations

import numpy as np
import pytest

from service.spectra import Source, list_readers
from service.spectra.readers.exposure import write_exposure
from tests.support.multi_object_files import real_plate
from tests.support.spectrum_writers import (
    sdss_like_spectrum,
    write_desi,
    write_eso_sdp,
    write_json,
    write_npy,
    write_sdss_spec,
    write_spspec,
)

EXPECTED = {"sdss-spec", "sdss-spspec", "sdss-spplate", "desi-coadd", "eso-sdp", "arrays",
            "specula-exposure", "specutils-tabular"}


def _samples(sdss_spec_path, desi_paths):
    s = sdss_like_spectrum()
    w = 3600 + 0.8 * np.arange(50)
    yield "sdss-spec", sdss_spec_path.read_bytes()
    for path in desi_paths.values():
        yield "desi-coadd", path.read_bytes()
    for variant in ("full", "lite", "coadd-only"):
        yield "sdss-spec", write_sdss_spec(s, variant=variant)
    yield "sdss-spspec", write_spspec(s, coeff0=3.5797)
    yield "sdss-spplate", real_plate(sdss_spec_path)  # also spSpec-shaped: priority decides
    yield "eso-sdp", write_eso_sdp(s)
    yield "desi-coadd", write_desi({"B": (w, np.ones((1, 50)), np.ones((1, 50)),
                                          np.zeros((1, 50)))}, [1])
    yield "arrays", write_json([s])
    yield "arrays", write_npy(s)
    yield "specula-exposure", write_exposure([s, s])
    yield "specula-exposure", write_exposure([s])  # one row: also ESO-shaped if WAVE present


def test_the_eight_formats_are_registered():
    assert {r.name for r in list_readers()} == EXPECTED
    assert all(r.description for r in list_readers())


def test_exactly_one_reader_wins_on_every_sample(sdss_spec_path, desi_paths):
    n = 0
    for expected, data in _samples(sdss_spec_path, desi_paths):
        src = Source(data)
        matches = [r for r in list_readers() if r.identify(src)]
        assert matches and matches[0].name == expected, (expected, [r.name for r in matches])
        if len(matches) > 1:  # overlaps are allowed only where priority separates them
            assert matches[0].priority > matches[1].priority
        n += 1
    assert n >= 12


@pytest.mark.parametrize("data", [b"", b"plain text", b"[1, 2, 3]", b"SIMPLE  = x"])
def test_nothing_identifies_junk(data):
    src = Source(data)
    assert [r.name for r in list_readers() if _safe(r.identify, src)] == []


def _safe(fn, src):
    """As the registry treats an identify that raises something other than SpectrumError."""
    try:
        return fn(src)
    except Exception:  # noqa: BLE001
        return False
