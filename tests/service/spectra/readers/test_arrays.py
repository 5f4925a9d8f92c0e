"""arrays: JSON documents and .npy files, including the ways they can be hostile."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from service.spectra import Source, SpectrumError, preprocess, read_spectra
from tests.support.spectrum_writers import sdss_like_spectrum, write_json, write_npy


def _read(data: bytes, name: str = "x"):
    return read_spectra(Source(data, name=name))


@pytest.mark.parametrize("error", [False, True])
def test_json_round_trip_onto_the_grid(error):
    s = sdss_like_spectrum()
    name, (r,) = _read(write_json([s], error=error))
    assert name == "arrays" and r.object_id == s.object_id
    np.testing.assert_array_equal(r.mask, s.mask)
    a, b = preprocess(s), preprocess(r)
    np.testing.assert_allclose(b.x, a.x, rtol=1e-5, atol=1e-5)


def test_json_many_spectra():
    spectra = [sdss_like_spectrum(seed=i) for i in range(3)]
    _, out = _read(write_json(spectra))
    assert len(out) == 3
    for s, r in zip(spectra, out):
        np.testing.assert_array_equal(r.flux, s.flux)


@pytest.mark.parametrize("rows", [2, 3, 4])
def test_npy_rows_round_trip(rows):
    s = sdss_like_spectrum()
    name, (r,) = _read(write_npy(s, rows=rows), "x.npy")
    assert name == "arrays"
    np.testing.assert_array_equal(r.wavelength, s.wavelength)
    if rows == 4:
        np.testing.assert_array_equal(r.mask, s.mask)
        np.testing.assert_allclose(preprocess(r).x, preprocess(s).x, rtol=1e-6, atol=1e-6)


def test_npy_structured_round_trip():
    s = sdss_like_spectrum()
    _, (r,) = _read(write_npy(s, structured=True))
    np.testing.assert_array_equal(r.mask, s.mask)
    np.testing.assert_allclose(preprocess(r).x, preprocess(s).x, rtol=1e-6, atol=1e-6)


def _npy_with_header(shape, dtype="<f8", payload=b""):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload  # write_array_header_1_0 writes the magic too


@pytest.mark.parametrize("shape,code", [((2, 10**9), "too_large"), ((2, 100), "corrupt_file")])
def test_npy_declared_shape_is_checked_before_loading(shape, code):
    data = _npy_with_header(shape, payload=b"\0" * 16)
    with pytest.raises(SpectrumError) as e:
        _read(data)
    assert e.value.code == code


def test_npy_pickle_is_never_loaded():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SpectrumError) as e:
        _read(buf.getvalue())
    assert e.value.code == "bad_dtype"


def test_npy_wrong_shape():
    buf = io.BytesIO()
    np.save(buf, np.zeros((5, 10)))
    with pytest.raises(SpectrumError) as e:
        _read(buf.getvalue())
    assert e.value.code == "bad_shape"


@pytest.mark.parametrize("doc,code", [
    ({"flux": [1, 2]}, "missing_column"),
    ({"wavelength": [1, 2], "flux": ["a", "b"]}, "bad_dtype"),
    ({"wavelength": [1, 2, 3], "flux": [1, 2]}, "bad_shape"),
    ({"wavelength": [[1, 2], [3]], "flux": [1, 2]}, "bad_shape"),
    ({"wavelength": [3, 2, 1], "flux": [1, 2, 3]}, "wavelength_not_increasing"),
    ({"wavelength": [1, None, 3], "flux": [1, 2, 3]}, "bad_dtype"),
    ({"wavelength": [], "flux": []}, "empty_spectrum"),
    ({"spectra": "nope"}, "bad_request"),
    ({"spectra": []}, "empty_spectrum"),
    ({"wavelength": [1, 2], "flux": [1, 2], "ivar": [1, 1], "error": [1, 1]}, "bad_request"),
])
def test_bad_json_is_typed(doc, code):
    with pytest.raises(SpectrumError) as e:
        _read(json.dumps(doc).encode())
    assert e.value.code == code


def test_json_nesting_bomb_is_typed():
    with pytest.raises(SpectrumError) as e:
        _read(b"{" + b'"a":[' * 100000 + b"]" * 100000 + b"}")
    assert e.value.code == "bad_request"


def test_nan_wavelength_in_json_is_non_finite():
    with pytest.raises(SpectrumError) as e:
        _read(b'{"wavelength": [1, NaN, 3], "flux": [1, 2, 3]}')
    assert e.value.code == "non_finite"
