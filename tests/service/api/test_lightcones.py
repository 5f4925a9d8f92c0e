"""Lightcone serving over real HTTP (a `specula serve` process on loopback).

The repository holds the tiny spectrum classifier and a tiny, untrained lightcone regressor
exported by the real training exporter (``training.lightcone.export_onnx``) on the tiny config's
grid (4 × 4 sky cells of 8 Mpc, 16 frequency bins 75–200 MHz), so every answer can be checked
against ONNX Runtime run directly on ``service.lightcones.preprocess`` output.
"""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from astropy.cosmology import Planck15
from astropy.io import fits

from service.inference.lightcone import combine_patches
from service.inference.offline import estimate_lightcone_file
from service.inference.repository import ModelError
from service.lightcones import (
    Source,
    make_lightcone,
    preprocess,
    preprocess_patches,
    read_lightcone,
)
from service.lightcones.statistics import Component, TrainingReference, summary_statistics
from tests.support.http_service import Service
from tests.support.tiny_classifier import write_tiny_model
from training.lightcone.config import load_config
from training.lightcone.export_onnx import export, run_onnx
from training.lightcone.model import LightconeNet

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "training" / "lightcone" / "configs" / "lightcone_tiny.json"
SIMRUN = REPO.parent / "shared" / "data" / "21cmfast" / "simrun_0.h5"
NAME = "lightcone_regressor"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def lc_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lc-models")
    write_tiny_model(root, version=1)
    cfg = load_config(TINY)
    torch.manual_seed(0)
    net = LightconeNet(cfg.model, cfg.grid.model_grid(), len(cfg.param_names)).eval()
    x = np.random.default_rng(0).normal(0, 0.2, (3, *cfg.grid.model_grid().shape))
    export(net, cfg, np.ones(5, np.float32), root / NAME / "1", parity_x=x.astype(np.float32))
    return root


@pytest.fixture(scope="module")
def svc(lc_repo, tmp_path_factory):

    s = Service(lc_repo, tmp_path_factory.mktemp("lc-logs") / "service.log",
                max_file_bytes=8 * 1024 * 1024)
    yield s
    s.stop()


def grid():
    return load_config(TINY).grid.model_grid()


def expected(cube: np.ndarray, lc_repo: Path, **axes) -> dict[str, np.ndarray]:
    """ONNX Runtime on every sky patch of the shared preprocessing, combined as the service
    says it combines them."""
    return expected_for(make_lightcone(cube, **axes), lc_repo)


def expected_for(lc, lc_repo: Path) -> dict[str, np.ndarray]:
    out = run_onnx(lc_repo / NAME / "1" / "model.onnx", preprocess_patches(lc, grid()).x)
    mean, sigma, _ = combine_patches(out["theta_mean"], out["theta_sigma"])
    return {"theta_mean": mean[None], "theta_sigma": sigma[None], "patches": out["theta_mean"]}


def npy(arr) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def post(svc, content: bytes, **params):
    return svc.client.post("/v1/lightcones:infer", content=content, params=params,
                           headers={"content-type": "application/octet-stream"})


def means(resp) -> np.ndarray:
    return np.array([p["mean"] for p in resp.json()["parameters"].values()])


def test_raw_float32_on_grid(svc, lc_repo):
    cube = np.random.default_rng(1).normal(0, 20, (4, 4, 16)).astype("<f4")
    r = post(svc, cube.tobytes(), shape="4,4,16")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == NAME and body["version"] == 1
    assert list(body["parameters"]) == ["OMm", "L_X", "NU_X_THRESH", "ION_Tvir_MIN",
                                        "HII_EFF_FACTOR"]
    exp = expected(cube, lc_repo)
    np.testing.assert_allclose(means(r), exp["theta_mean"][0], rtol=1e-5, atol=1e-5)
    sig = np.array([p["sigma"] for p in body["parameters"].values()])
    np.testing.assert_allclose(sig, exp["theta_sigma"][0], rtol=1e-5)
    assert body["parameters"]["NU_X_THRESH"]["unit"] == "eV"
    for name, p in body["parameters"].items():  # a mean outside the prior is flagged
        outside = not p["prior"][0] <= p["mean"] <= p["prior"][1]
        assert outside == any(w.startswith(name + " =") for w in body["warnings"])


def test_npy_equals_raw(svc):
    cube = np.random.default_rng(2).normal(0, 20, (4, 4, 16)).astype("<f4")
    a = post(svc, cube.tobytes(), shape="4,4,16")
    b = post(svc, npy(cube))
    assert a.status_code == b.status_code == 200, b.text
    np.testing.assert_allclose(means(a), means(b), rtol=1e-6)


def test_raw_with_axes_is_resampled(svc, lc_repo):
    nu = np.linspace(210.0, 70.0, 64)  # decreasing frequency = increasing redshift
    cube = np.random.default_rng(3).normal(0, 20, (10, 10, 64)).astype("<f4")
    r = post(svc, cube.tobytes(), shape="10,10,64", nu_first_mhz=210.0, nu_last_mhz=70.0,
             cell_mpc=4.0)
    assert r.status_code == 200, r.text
    exp = expected(cube, lc_repo, frequencies_mhz=nu, cell_mpc=4.0)
    np.testing.assert_allclose(means(r), exp["theta_mean"][0], rtol=1e-4, atol=1e-4)
    body = r.json()
    assert body["notes"]
    # 40 Mpc of sky for a 32 Mpc field: 2 × 2 overlapping patches, the whole sky seen
    assert body["sky"]["patches"] == 4 and body["sky"]["offsets_mpc"] == [[0.0, 8.0]] * 2
    assert body["sky"]["covered_fraction"] == 1.0
    first = body["parameters"]["OMm"]["patch_means"]
    np.testing.assert_allclose(first, exp["patches"][:, 0], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not SIMRUN.is_file(), reason="shared 21cmFAST file absent")
def test_real_21cmfast_v3_file(svc, lc_repo):
    r = svc.client.post("/v1/lightcones:infer", content=SIMRUN.read_bytes(),
                        headers={"x-filename": "simrun_0.h5"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["format"] == "21cmfast-h5" and body["shape"] == [30, 30, 716]
    assert body["file_parameters"]["L_X"] == pytest.approx(39.47488252125877)
    _, lc = read_lightcone(Source.from_path(SIMRUN))
    exp = expected_for(lc, lc_repo)
    np.testing.assert_allclose(means(r), exp["theta_mean"][0], rtol=1e-4, atol=1e-4)
    # 150 Mpc of sky, a 32 Mpc field: 4 × 4 patches spread edge to edge, and the answer says
    # that only part of the sky was seen
    assert body["sky"]["patches"] == 16 and body["sky"]["sky_mpc"] == [150.0, 150.0]
    assert body["sky"]["covered_fraction"] == pytest.approx((128 / 150) ** 2, abs=1e-3)
    assert any("16 patches" in n and "73 %" in n for n in body["notes"])


def test_fits_cube(svc):
    cube = np.random.default_rng(4).normal(0, 20, (8, 8, 40)).astype("<f4")
    hdu = fits.PrimaryHDU(cube.transpose(2, 1, 0))
    hdu.header.update(BUNIT="mK", CTYPE3="FREQ", CRVAL3=205e6, CDELT3=-3.5e6, CRPIX3=1.0,
                      CUNIT1="Mpc", CDELT1=4.0)
    b = io.BytesIO()
    hdu.writeto(b)
    r = post(svc, b.getvalue())
    assert r.status_code == 200, r.text
    assert r.json()["format"] == "fits-cube"


@pytest.mark.parametrize("kind,status,code", [
    ("off_grid_no_axes", 422, "missing_axis"),
    ("length_mismatch", 422, "bad_shape"),
    ("pickle", 422, "bad_dtype"),
    ("garbage", 415, "unknown_format"),
    ("too_big", 413, "too_large"),
    ("short_los", 422, "no_grid_overlap"),
])
def test_bad_cubes(svc, kind, status, code):
    cube = np.zeros((4, 4, 16), "<f4")
    if kind == "off_grid_no_axes":
        r = post(svc, np.zeros((5, 4, 16), "<f4").tobytes(), shape="5,4,16")
    elif kind == "length_mismatch":
        r = post(svc, cube.tobytes()[:-4], shape="4,4,16")
    elif kind == "pickle":
        b = io.BytesIO()
        np.save(b, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        r = post(svc, b.getvalue())
    elif kind == "garbage":
        r = post(svc, b"not a cube" * 100)
    elif kind == "too_big":
        r = post(svc, b"\0" * (8 * 1024 * 1024 + 4), shape="4,4,524289")
    else:
        r = post(svc, np.zeros((4, 4, 20), "<f4").tobytes(), shape="4,4,20", z_first=6.0,
                 z_last=8.0, cell_mpc=8.0)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code


def v3_lightcone(distances: np.ndarray) -> bytes:
    """A 21cmFAST v3-layout HDF5 file (4 × 4 cells of 8 Mpc) with these slice distances."""
    b = io.BytesIO()
    with h5py.File(b, "w") as f:
        f.create_group("lightcones").create_dataset(
            "brightness_temp", data=np.random.default_rng(5).normal(0, 20, (4, 4, 40))
            .astype("<f4"))
        f["distances"] = distances
        f.create_group("user_params").attrs.update({"BOX_LEN": 32.0, "HII_DIM": 4})
        f.create_group("cosmo_params").attrs.update({"OMm": 0.31, "OMb": 0.049,
                                                     "hlittle": 0.68})
    return b.getvalue()


def test_21cmfast_file_with_reversed_distances_is_refused(svc):
    """Reversed distances labelled every slice with another's redshift and were accepted."""
    d = Planck15.comoving_distance(np.linspace(5.5, 19.0, 40)).value
    assert post(svc, v3_lightcone(d)).status_code == 200
    r = post(svc, v3_lightcone(d[::-1].copy()))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "bad_axis" and "increase" in r.json()["error"]


def oip_infer(svc, x: np.ndarray, name: str = NAME):
    header = json.dumps({"inputs": [{"name": "lightcone", "shape": list(x.shape),
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "theta_mean", "parameters": {"binary_data": True}},
                                     {"name": "theta_sigma"}]}).encode()
    return svc.client.post(f"/v2/models/{name}/infer", content=header + x.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(header))})


def test_oip_binary_matches_native(svc, lc_repo):
    cubes = np.random.default_rng(5).normal(0, 20, (3, 4, 4, 16)).astype("<f4")
    x = np.stack([preprocess(make_lightcone(c), grid()).x for c in cubes])
    r = oip_infer(svc, x)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    mean = np.frombuffer(r.content[n:], "<f4").reshape(3, 5)
    sigma = np.array(head["outputs"][1]["data"]).reshape(3, 5)
    assert (sigma > 0).all()
    native = post(svc, cubes[1].tobytes(), shape="4,4,16")
    np.testing.assert_allclose(mean[1], means(native), rtol=1e-5, atol=1e-5)
    bad = oip_infer(svc, x[:, :, :3])
    assert bad.status_code == 400 and bad.json()["code"] == "bad_shape"


def test_oip_metadata_and_spectrum_routes_untouched(svc):
    m = svc.client.get(f"/v2/models/{NAME}").json()
    assert m["parameters"]["kind"] == "lightcone-regressor"
    assert m["inputs"][0]["shape"] == [-1, 1, 4, 4, 16]
    assert svc.client.get(f"/v2/models/{NAME}/ready").status_code == 200
    s = svc.client.get("/v2/models/spectrum_classifier")
    assert s.status_code == 200 and s.json()["parameters"]["kind"] == "spectrum-classifier"
    assert svc.client.get("/v2/models/nope").status_code == 404
    assert svc.infer_rows(2).status_code == 200  # spectrum OIP still answers via its router


def test_parallel_uploads(svc):
    cube = np.random.default_rng(6).normal(0, 20, (4, 4, 16)).astype("<f4")
    with ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda _: post(svc, npy(cube)), range(16)))
    assert all(r.status_code == 200 for r in rs)
    ref = means(rs[0])
    for r in rs[1:]:
        np.testing.assert_allclose(means(r), ref, rtol=1e-6)
    assert svc.metric("specula_requests_total", model=NAME, outcome="success") >= 16


def test_chunked_upload_needs_length(svc):
    """Cubes are sized before they are read: a body without Content-Length is refused."""
    cube = np.zeros((4, 4, 16), "<f4").tobytes()
    r = svc.client.post("/v1/lightcones:infer", params={"shape": "4,4,16"},
                        content=iter([cube[:100], cube[100:]]))
    assert r.status_code == 411 and r.json()["code"] == "length_required"


def hostile_hdf5(path: Path, kind: str, victim: Path) -> bytes:
    """A small 21cmFAST-v3-shaped upload whose ``lightcones/brightness_temp`` reaches for a file
    on the server's disk (``victim``) in one of the ways HDF5 allows, or a soft-link cycle."""
    shape = (4, 4, 16)
    with h5py.File(path, "w") as f:
        f["distances"] = 8000.0 + 4.0 * np.arange(shape[2])
        lcs = f.create_group("lightcones")
        if kind == "external_storage":
            lcs.create_dataset("brightness_temp", shape=shape, dtype="<f4",
                               external=[(str(victim), 0, 4 * int(np.prod(shape)))])
        elif kind == "virtual_dataset":
            layout = h5py.VirtualLayout(shape=shape, dtype="<f4")
            layout[:] = h5py.VirtualSource(str(victim), "cube", shape=shape)
            lcs.create_virtual_dataset("brightness_temp", layout, fillvalue=0.0)
        elif kind == "external_link":
            lcs["brightness_temp"] = h5py.ExternalLink(str(victim), "/cube")
        elif kind == "soft_link_cycle":
            lcs["brightness_temp"] = h5py.SoftLink("/lightcones/other")
            lcs["other"] = h5py.SoftLink("/lightcones/brightness_temp")
    return path.read_bytes()


HOSTILE_HDF5 = {"external_storage": "hdf5_external_storage",
                "virtual_dataset": "hdf5_virtual_dataset",
                "external_link": "hdf5_external_link",
                "soft_link_cycle": "hdf5_bad_link"}


@pytest.mark.parametrize("kind", sorted(HOSTILE_HDF5))
def test_hdf5_naming_another_file_is_refused_and_reveals_nothing(svc, tmp_path, kind):
    """An upload may never make the server read (or probe for) a file of its own disk: the
    victim exists only on the server's side, holds a valid cube, and yet the answer is a 422
    with the structure's own code — the same whether the named file exists or not — and the
    server stays up (a virtual dataset once crashed the process)."""
    victim = tmp_path / "server_only.h5" if kind != "external_storage" else tmp_path / "raw"
    cube = np.random.default_rng(9).normal(0, 20, (4, 4, 16)).astype("<f4")
    if kind == "external_storage":
        victim.write_bytes(cube.tobytes())
    else:
        with h5py.File(victim, "w") as f:
            f["cube"] = cube
    answers = []
    for target in (victim, tmp_path / "missing"):
        r = post(svc, hostile_hdf5(tmp_path / f"{kind}.h5", kind, target))
        answers.append((r.status_code, r.json()["code"]))
        assert str(target) not in r.text
    assert answers == [(422, HOSTILE_HDF5[kind])] * 2, answers
    assert post(svc, cube.tobytes(), shape="4,4,16").status_code == 200  # still serving


def test_a_version_with_training_statistics_says_how_far_a_cube_is(lc_repo, tmp_path):
    """A manifest's ``reference_statistics`` (training.lightcone.reference) gives every answer
    a ``training_distance``, and a warning when the cube is unlike the training cubes; a
    malformed one makes the version unservable instead of silently warning-free."""
    repo = tmp_path / "models"
    shutil.copytree(lc_repo / NAME, repo / NAME)
    path = repo / NAME / "1" / "manifest.json"
    m = json.loads(path.read_text())
    rng = np.random.default_rng(8)
    train = rng.normal(0, 20, (80, 4, 4, 16)).astype(np.float32)
    x = np.stack([preprocess_patches(make_lightcone(c), grid(),
                                     version=m["preprocess_version"]).x[0] for c in train])
    ref = TrainingReference(4, (Component.fit("observed", summary_statistics(x, 4)),), 80,
                            "test cubes")
    m["reference_statistics"] = ref.to_json()
    path.write_text(json.dumps(m))
    cube = rng.normal(0, 20, (4, 4, 16)).astype(np.float32)
    np.save(tmp_path / "near.npy", cube)
    np.save(tmp_path / "far.npy", 8 * cube)  # eight times brighter than anything trained on
    near = estimate_lightcone_file(str(repo), NAME, None, str(tmp_path / "near.npy"))
    far = estimate_lightcone_file(str(repo), NAME, None, str(tmp_path / "far.npy"))
    assert near["training_distance"]["outside"] is False
    assert not any("outside the training set" in w for w in near["warnings"])
    assert far["training_distance"]["score"] > 1.0
    assert far["training_distance"]["d2"] > far["training_distance"]["threshold_d2"]
    assert any("outside the training set" in w for w in far["warnings"])
    m["reference_statistics"]["components"][0]["mean"] = [0.0]
    path.write_text(json.dumps(m))
    with pytest.raises(ModelError) as e:
        estimate_lightcone_file(str(repo), NAME, None, str(tmp_path / "near.npy"))
    assert e.value.code == "bad_manifest"
