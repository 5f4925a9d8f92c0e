"""training/spectra/fuse_redshift.py on a copy of the shipped classifier: the fused version is one the
service loads and serves, with the template-fit redshift, its warning bits and a calibrated
σ_z; the telluric band mask is where the physics says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.inference.kinds.spectrum import build_pipeline
from service.inference.postprocess import summarise
from service.inference.repository import ModelRepository
from service.spectra import DEFAULT_GRID, make_spectrum, preprocess
from service.spectra.zwarning import Z_WARNING_BITS
from training.spectra.fuse_redshift import (
    SERVED_SEARCH,
    TELLURIC_BANDS,
    derive_version,
    fuse_version,
)
from training.spectra.redshift_graph import band_mask

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "models" / "spectrum_classifier" / "2"
V3 = REPO / "models" / "spectrum_classifier" / "3"
TINY = REPO / "training" / "configs" / "spectra_tiny.json"


def test_band_mask_covers_the_o2_bands_only():
    keep = band_mask(TELLURIC_BANDS, DEFAULT_GRID)
    lam = 10.0 ** (DEFAULT_GRID.loglam_start + DEFAULT_GRID.dloglam * np.arange(DEFAULT_GRID.npix))
    assert keep[np.argmin(np.abs(lam - 7620.0))] == 0 and keep[np.argmin(np.abs(lam - 6875.0))] == 0
    assert keep[np.argmin(np.abs(lam - 6563.0))] == 1 and keep[np.argmin(np.abs(lam - 5007.0))] == 1
    # the A band (120 Å) and B band (40 Å) at Δlog10λ = 1e-4: ~70 + ~25 pixels
    assert 80 < (keep == 0).sum() < 110


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="shipped model absent")
def test_fused_version_is_served_with_template_fit_redshift(tmp_path):
    vdir = tmp_path / "spectrum_classifier" / "2"
    shutil.copytree(SHIPPED, vdir)
    info = fuse_version(vdir, TINY, 96, data_dir=None)
    for c in ("GALAXY", "QSO"):
        cal = info["calibration"][c]
        assert cal["scale"] > 0 and cal["n"] > 0
        assert abs(cal["coverage_after"] - 0.68) <= 1.0 / cal["n"] + 0.01
    manifest = json.loads((vdir / "manifest.json").read_text())
    names = {o["name"]: o["dtype"] for o in manifest["outputs"]}
    assert names["z_warning"] == "int32" and "z_network" in names and "z_rchi2" in names
    with pytest.raises(SystemExit):  # fusing twice would nest the graphs
        fuse_version(vdir, TINY, 96, data_dir=None)
    pipeline = build_pipeline(ModelRepository(tmp_path).load("spectrum_classifier", 2), "cpu")
    x = np.zeros((3, 2, DEFAULT_GRID.npix), np.float32)
    x[:, 0] = 1.0
    x[:, 1] = 0.5
    outputs = pipeline.runner.run({"spectrum": x})
    assert outputs["z_warning"].dtype == np.int32
    bits = sum(Z_WARNING_BITS)
    assert ((outputs["z_warning"] & ~bits) == 0).all()


@pytest.mark.skipif(not V3.is_dir(), reason="shipped v3 absent")
def test_pure_noise_is_flagged_no_signal_by_the_served_model():
    """Gaussian noise with honest errors used to come back QSO at P ≈ 1 with nothing to say
    it was noise; the template fit's Δχ² against the null model says it (bit z_no_signal)."""
    pipeline = build_pipeline(ModelRepository(REPO / "models").load("spectrum_classifier", 3),
                              "cpu")
    rng = np.random.default_rng(7)
    lam = np.geomspace(3700.0, 9100.0, 3800)
    x = np.stack([preprocess(make_spectrum(lam, rng.normal(0.0, s, lam.size),
                                           np.full(lam.size, s ** -2.0), None,
                                           {"survey": "arrays", "object_id": str(i)}),
                             DEFAULT_GRID).x for i, s in enumerate((0.5, 1.0, 3.0))])
    results = summarise(pipeline.runner.run({"spectrum": x.astype(np.float32)}), pipeline.labels)
    assert all("z_no_signal" in r["z_warnings"] for r in results)


@pytest.mark.skipif(not V3.is_dir(), reason="shipped v3 absent")
def test_new_version_from_a_fused_one_keeps_its_network_and_leaves_the_source_alone(tmp_path):
    """`fuse_redshift SRC --new-version N`: the network is taken out of a fused version and
    fused afresh with the served search (robust weights included); SRC is not touched."""
    src = tmp_path / "spectrum_classifier" / "3"
    shutil.copytree(V3, src)
    before = (src / "model.onnx").read_bytes()
    info = derive_version(src, 5, TINY, 96, data_dir=None)
    assert (src / "model.onnx").read_bytes() == before
    assert info["config"]["spike_sigma"] == SERVED_SEARCH.spike_sigma > 0
    manifest = json.loads((tmp_path / "spectrum_classifier" / "5" / "manifest.json").read_text())
    assert manifest["version"] == 5 and manifest["derived_from"]["version"] == "spectrum_classifier/3"
    assert [o["name"] for o in manifest["outputs"]].count("z_warning") == 1
    with pytest.raises(SystemExit):  # a version is written once
        derive_version(src, 5, TINY, 96, data_dir=None)
    repo = ModelRepository(tmp_path)
    old = build_pipeline(repo.load("spectrum_classifier", 3), "cpu").runner
    new = build_pipeline(repo.load("spectrum_classifier", 5), "cpu").runner
    rng = np.random.default_rng(1)
    x = np.stack([rng.normal(1.0, 0.2, (4, DEFAULT_GRID.npix)),
                  np.full((4, DEFAULT_GRID.npix), 0.5)], 1).astype(np.float32)
    a, b = old.run({"spectrum": x}), new.run({"spectrum": x})
    for k in ("probs", "z_network", "z_sigma_network", "epistemic"):
        np.testing.assert_array_equal(a[k], b[k])
