"""Readers on the real 21cmFAST v3 file and on files the tests write (npy, FITS, HDF5)."""

from __future__ import annotations

import gzip
import io

import h5py
import numpy as np
import pytest
from astropy.io import fits

from service.lightcones import LightconeError, Source, read_lightcone
from service.lightcones.lightcone import NU21_MHZ
from tests.support.lc_helpers import toy_cube


def src(data: bytes, name: str = "x", max_bytes: int = 64 << 20) -> Source:
    return Source(data, name=name, max_bytes=max_bytes)


# ---- 21cmfast-h5: the real v3 file, read as it is ------------------------------------------
def test_real_v3_file(simrun_path):
    fmt, lc = read_lightcone(Source.from_path(simrun_path))
    assert fmt == "21cmfast-h5" and lc.meta["layout"] == "v3"
    assert lc.shape == (30, 30, 716) and lc.cube.dtype == np.float32
    with h5py.File(simrun_path, "r") as f:
        np.testing.assert_allclose(lc.cube, f["lightcones/brightness_temp"][()], rtol=1e-6)
        z0 = float(f.attrs["redshift"])
    assert lc.cell_mpc == pytest.approx(5.0)  # BOX_LEN 150 / HII_DIM 30
    # the first slice sits at the file's own redshift attribute (distances → z in its cosmology)
    assert lc.redshifts[0] == pytest.approx(z0, abs=1e-4)
    assert 34.5 < lc.redshifts[-1] < 35.5 and np.all(np.diff(lc.redshifts) > 0)
    p = lc.params
    assert p["L_X"] == pytest.approx(39.47488252125877)
    assert p["HII_EFF_FACTOR"] == pytest.approx(29.38532589994534)
    assert p["ION_Tvir_MIN"] == pytest.approx(4.69897)
    assert p["NU_X_THRESH"] == pytest.approx(500.0)
    assert p["OMm"] == pytest.approx(0.30964144154550644)
    assert lc.frequencies_mhz[0] == pytest.approx(NU21_MHZ / (1 + z0), rel=1e-5)


def write_v4_like(path, cube, distances, *, lowz=0, highz=0, compression=None):
    """The layout 21cmFAST v4's ``LightCone.save`` writes (see service/lightcones/readers/hdf5.py)."""
    with h5py.File(path, "w") as f:
        f.attrs["lightcone"] = True
        f.attrs["__version__"] = "4.1.1"
        f.attrs["lowz_buffer_pixels"] = lowz
        f.attrs["highz_buffer_pixels"] = highz
        f.create_group("lightcones").create_dataset("brightness_temp", data=cube,
                                                    compression=compression)
        f["lightcone_distances"] = distances
        ip = f.create_group("InputParameters")
        ip.attrs["random_seed"] = 7
        ip.create_group("cosmo_params").attrs.update({"OMm": 0.3, "OMb": 0.049, "hlittle": 0.68})
        ip.create_group("astro_params").attrs.update({"L_X": 40.0, "HII_EFF_FACTOR": 30.0})
        ip.create_group("simulation_options").attrs.update({"BOX_LEN": 16.0, "HII_DIM": 8})


def test_v4_layout_with_buffers(tmp_path):
    cube = toy_cube((8, 8, 50))
    d = 8000.0 + 2.0 * np.arange(50)
    write_v4_like(tmp_path / "lc.h5", cube, d, lowz=3, highz=5)
    fmt, lc = read_lightcone(Source.from_path(tmp_path / "lc.h5"))
    assert fmt == "21cmfast-h5" and lc.meta["layout"] == "v4"
    np.testing.assert_array_equal(lc.cube, cube[:, :, 3:45])  # buffers removed
    assert lc.cell_mpc == 2.0 and lc.params["L_X"] == 40.0 and lc.meta["random_seed"] == 7
    assert len(lc.redshifts) == 42 and np.all(np.diff(lc.redshifts) > 0)


def test_hdf5_compressed_bomb_refused_before_allocation(tmp_path):
    """A gzip-compressed dataset of zeros declaring 512 MiB: refused from its shape alone."""
    with h5py.File(tmp_path / "bomb.h5", "w") as f:
        f.create_group("lightcones").create_dataset(
            "brightness_temp", shape=(512, 512, 512), dtype="f4", chunks=(64, 64, 64),
            compression="gzip", fillvalue=0.0)
        f["distances"] = 8000.0 + np.arange(512.0)
    data = (tmp_path / "bomb.h5").read_bytes()
    assert len(data) < 1 << 20
    with pytest.raises(LightconeError) as e:
        read_lightcone(src(data, max_bytes=64 << 20))
    assert e.value.code == "too_large"


def test_hdf5_cube(tmp_path):
    cube = toy_cube()
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["cube"] = cube.astype(np.float64)
        f["redshifts"] = np.linspace(6, 9, cube.shape[2])
        f.attrs["cell_mpc"] = 2.0
    fmt, lc = read_lightcone(Source.from_path(tmp_path / "c.h5"))
    assert fmt == "hdf5-cube" and lc.cell_mpc == 2.0
    np.testing.assert_allclose(lc.cube, cube)


def test_garbage_hdf5_is_corrupt():
    data = b"\x89HDF\r\n\x1a\n" + b"\x00" * 1000
    with pytest.raises(LightconeError) as e:
        read_lightcone(src(data), format="21cmfast-h5")
    assert e.value.code == "corrupt_file"


# ---- npy -------------------------------------------------------------------------------------
def npy_bytes(arr, **kw) -> bytes:
    b = io.BytesIO()
    np.save(b, arr, **kw)
    return b.getvalue()


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", "<f2", "<i2"])
def test_npy_roundtrip(dtype):
    cube = toy_cube().astype(dtype)
    fmt, lc = read_lightcone(src(npy_bytes(cube), "c.npy"))
    assert fmt == "npy" and lc.redshifts is None and lc.cell_mpc is None
    np.testing.assert_array_equal(lc.cube, cube.astype(np.float32))


def test_npy_gzipped():
    cube = toy_cube()
    _, lc = read_lightcone(src(gzip.compress(npy_bytes(cube)), "c.npy.gz"))
    np.testing.assert_array_equal(lc.cube, cube)


def test_npy_pickle_refused():
    data = npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(LightconeError) as e:
        read_lightcone(src(data))
    assert e.value.code == "bad_dtype"


def test_npy_declared_shape_checked_against_bytes():
    good = npy_bytes(toy_cube())
    with pytest.raises(LightconeError) as e:
        read_lightcone(src(good[:-4]))
    assert e.value.code == "corrupt_file"
    # a header that declares a 4 GiB cube over a few bytes: too_large, nothing allocated
    hdr = good.replace(b"(8, 8, 40)", b"(1024, 1024, 1024)")
    with pytest.raises(LightconeError) as e:
        read_lightcone(src(hdr))
    assert e.value.code == "too_large"


@pytest.mark.parametrize("arr,code", [(np.zeros((4, 4), "f4"), "bad_shape"),
                                      (np.zeros((2, 2, 0), "f4"), "bad_shape"),
                                      (np.zeros((2, 2, 2), "c8"), "bad_dtype"),
                                      (np.full((2, 2, 2), np.nan, "f4"), "non_finite")])
def test_npy_bad_arrays(arr, code):
    with pytest.raises(LightconeError) as e:
        read_lightcone(src(npy_bytes(arr)))
    assert e.value.code == code


def test_gzip_bomb():
    data = gzip.compress(b"\x93NUMPY" + b"\x00" * (70 << 20))
    with pytest.raises(LightconeError.__mro__[1]) as e:  # InputError from the shared Source
        read_lightcone(src(data))
    assert e.value.code == "decompression_bomb"


# ---- fits-cube -------------------------------------------------------------------------------
def fits_bytes(data, **cards) -> bytes:
    hdu = fits.PrimaryHDU(data)
    for k, v in cards.items():
        hdu.header[k] = v
    b = io.BytesIO()
    hdu.writeto(b)
    return b.getvalue()


def test_fits_cube_freq_axis_kelvin():
    cube = toy_cube((6, 5, 30))  # (x, y, los)
    nu0, dnu = 150e6, -0.5e6
    data = fits_bytes(cube.transpose(2, 1, 0) / 1000.0, BUNIT="K", CTYPE3="FREQ", CRVAL3=nu0,
                      CDELT3=dnu, CRPIX3=1.0, CUNIT3="Hz", CUNIT1="Mpc", CDELT1=2.0)
    fmt, lc = read_lightcone(src(data, "c.fits"))
    assert fmt == "fits-cube" and lc.shape == (6, 5, 30) and lc.cell_mpc == 2.0
    np.testing.assert_allclose(lc.cube, cube, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(lc.frequencies_mhz, 150.0 - 0.5 * np.arange(30))


def test_fits_cube_redshift_axis_and_bad_unit():
    cube = toy_cube((4, 4, 10))
    data = fits_bytes(cube.transpose(2, 1, 0), CTYPE3="REDSHIFT", CRVAL3=6.0, CDELT3=0.1)
    _, lc = read_lightcone(src(data))
    np.testing.assert_allclose(lc.redshifts, 6.0 + 0.1 * np.arange(10))
    with pytest.raises(LightconeError) as e:
        read_lightcone(src(fits_bytes(cube.transpose(2, 1, 0), BUNIT="Jy/beam")))
    assert e.value.code == "bad_units"


def test_fits_truncated_is_refused():
    data = fits_bytes(toy_cube((16, 16, 64)).transpose(2, 1, 0))
    with pytest.raises(LightconeError.__mro__[1]) as e:
        read_lightcone(src(data[: len(data) // 2]))
    assert e.value.code == "corrupt_file"


def test_unknown_bytes():
    with pytest.raises(LightconeError) as e:
        read_lightcone(src(b"hello world" * 10))
    assert e.value.code == "unknown_format"


def test_real_v4_file_fixture():
    """A file 21cmFAST v4.1.1 itself wrote (fixtures/make_v4_fixture.py)."""
    from pathlib import Path

    path = Path(__file__).with_name("fixtures") / "v4_tiny.h5"
    fmt, lc = read_lightcone(Source.from_path(path))
    assert fmt == "21cmfast-h5" and lc.meta["layout"] == "v4"
    assert lc.shape == (8, 8, 456) and lc.cell_mpc == pytest.approx(4.0)
    # 21cmFAST's own LightCone.lightcone_redshifts gave 5.50000001 … 12.00628292
    assert lc.redshifts[0] == pytest.approx(5.5, abs=2e-4)
    assert lc.redshifts[-1] == pytest.approx(12.00628, abs=2e-3)
    assert lc.params["L_X"] == pytest.approx(40.0) and lc.params["OMm"] == pytest.approx(0.31)
    assert lc.meta["random_seed"] == 42 and lc.meta["simulator_version"] == "4.1.1"
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(lc.cube, f["lightcones/brightness_temp"][()], rtol=1e-6)
