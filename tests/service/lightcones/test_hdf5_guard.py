"""The HDF5 vetting in isolation (service/lightcones/readers/hdf5_guard.py): every structure
that names another file, or that the reader does not need, is refused before data is read;
what 21cmFAST and ordinary writers produce passes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from service.lightcones import LightconeError
from service.lightcones.readers.hdf5_guard import MAX_LINKS, open_vetted

SIMRUN = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "21cmfast" / "simrun_0.h5"


def written(path: Path, build) -> bytes:
    with h5py.File(path, "w") as f:
        build(f)
    return path.read_bytes()


def refused(data: bytes) -> str:
    with pytest.raises(LightconeError) as e:
        open_vetted(data, "upload.h5")
    return e.value.code


def test_plain_files_pass(tmp_path):
    def build(f):
        g = f.create_group("lightcones")
        g.create_dataset("brightness_temp", data=np.ones((4, 4, 8), "f4"), compression="gzip",
                         shuffle=True, fletcher32=True)
        f.create_dataset("lzf", data=np.ones(64, "f4"), compression="lzf")
        f["alias"] = h5py.SoftLink("/lightcones/brightness_temp")
        f["relative"] = h5py.SoftLink("lightcones")
        g["self"] = g  # a hard-link cycle: visited once, not refused
    with open_vetted(written(tmp_path / "ok.h5", build)) as f:
        assert f["alias"].shape == (4, 4, 8)


@pytest.mark.skipif(not SIMRUN.is_file(), reason="shared 21cmFAST file absent")
def test_real_21cmfast_file_passes():
    with open_vetted(SIMRUN.read_bytes()) as f:
        assert f["lightcones/brightness_temp"].shape == (30, 30, 716)


def test_nested_external_link_refused(tmp_path):
    def build(f):
        f.create_group("a/b")["c"] = h5py.ExternalLink("/etc/passwd", "/x")
    assert refused(written(tmp_path / "e.h5", build)) == "hdf5_external_link"


def test_virtual_dataset_onto_its_own_file_refused(tmp_path):
    """A VDS whose source is "." (the file itself, re-opened by name) is refused as well."""
    def build(f):
        f["src"] = np.ones((4, 4), "f4")
        layout = h5py.VirtualLayout(shape=(4, 4), dtype="f4")
        layout[:] = h5py.VirtualSource(".", "src", shape=(4, 4))
        f.create_virtual_dataset("v", layout)
    assert refused(written(tmp_path / "v.h5", build)) == "hdf5_virtual_dataset"


def test_dangling_soft_link_refused(tmp_path):
    assert refused(written(tmp_path / "s.h5",
                           lambda f: f.__setitem__("x", h5py.SoftLink("/nowhere")))
                   ) == "hdf5_bad_link"


def test_soft_link_to_an_external_link_refused_as_external(tmp_path):
    def build(f):
        f["ext"] = h5py.ExternalLink("/tmp/elsewhere.h5", "/cube")
        f["soft"] = h5py.SoftLink("/ext")
    assert refused(written(tmp_path / "se.h5", build)) == "hdf5_external_link"


def test_unknown_filter_refused(tmp_path):
    def build(f):
        f.create_dataset("d", data=np.arange(64, dtype="i4"), chunks=(64,),
                         scaleoffset=0)
    assert refused(written(tmp_path / "so.h5", build)) == "hdf5_filter"


def test_link_bomb_refused(tmp_path):
    def build(f):
        f["d"] = np.zeros(1, "f4")
        for i in range(MAX_LINKS + 1):
            f[f"l{i}"] = f["d"]
    assert refused(written(tmp_path / "many.h5", build)) == "hdf5_too_complex"


def test_garbage_is_corrupt():
    assert refused(b"\x89HDF\r\n\x1a\n" + b"\x00" * 1000) == "corrupt_file"
