"""The tiny config end to end: simulate → train a few steps → calibrate → export → evaluate.

Then the exported graph is held to the contract in models/README.md and checked against
PyTorch on the same preprocessed inputs (a real SDSS spectrum and simulated ones).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.spectra import DEFAULT_GRID, PREPROCESS_VERSION, Source, preprocess, read_spectra
from training.cli import main as train_main
from training.spectra.export_onnx import output_tolerances, run_onnx, run_torch, sha256_file
from training.spectra.labels import LABEL_NAMES
from training.spectra.simulate import generate
from training.spectra.train import load_checkpoint

TINY = Path(__file__).resolve().parents[3] / "training" / "configs" / "spectra_tiny.json"
OUTPUTS = ["probs", "entropy", "epistemic", "z", "z_sigma"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("tiny")
    rc = train_main(["spectra", "--config", str(TINY), "--out", str(root / "models"),
                     "--runs", str(root / "runs"), "--data-dir", str(root / "data"),
                     "--no-progress"])
    assert rc == 0
    model_dir = root / "models" / "spectrum_classifier" / "1"
    ckpt = next((root / "runs").glob("*/checkpoint.pt"))
    return model_dir, ckpt


@pytest.mark.slow
def test_manifest_declares_the_contract_and_its_sha256_matches(trained):
    model_dir, _ = trained
    man = json.loads((model_dir / "manifest.json").read_text())
    assert man["sha256"] == sha256_file(model_dir / man["file"])
    assert man["kind"] == "spectrum-classifier" and man["version"] == 1
    assert man["inputs"] == [{"name": "spectrum", "dtype": "float32",
                              "shape": [-1, 2, DEFAULT_GRID.npix]}]
    assert [o["name"] for o in man["outputs"]] == OUTPUTS
    assert man["outputs"][0]["shape"] == [-1, len(LABEL_NAMES)]
    assert [lab["name"] for lab in man["labels"]] == LABEL_NAMES
    assert man["top_classes"] == ["GALAXY", "QSO", "STAR"]
    assert man["grid"] == DEFAULT_GRID.to_manifest()
    assert man["preprocess_version"] == PREPROCESS_VERSION
    for key in ("config", "seed", "data", "git_commit", "created"):
        assert key in man["training"]
    assert man["metrics"]["accuracy_top"] is not None
    assert (model_dir / "report.md").read_text().startswith("# Spectrum classifier")
    assert "overall" in json.loads((model_dir / "report.json").read_text())


@pytest.mark.slow
def test_onnx_matches_pytorch_on_the_same_preprocessed_input(trained, sdss_spec_path, tmp_path):
    model_dir, ckpt = trained
    _, ens, _ = load_checkpoint(ckpt)
    _, specs = read_spectra(Source.from_path(sdss_spec_path))
    real = preprocess(specs[0], DEFAULT_GRID).x[None]
    sim = generate(ens_cfg_sim(ckpt), 5, 123, "test", cache_dir=None, progress=False)["x"]
    x = np.concatenate([real, sim.astype(np.float32)])
    a, b = run_onnx(model_dir / "model.onnx", x), run_torch(ens, x)
    tol = output_tolerances(ens, x)  # float32 rounding on both sides, propagated per output
    for name in OUTPUTS:
        err = np.abs(a[name] - b[name])
        assert (err <= tol[name]).all(), (name, float(np.max(err / tol[name])))


def ens_cfg_sim(ckpt):
    cfg, _, _ = load_checkpoint(ckpt)
    return cfg.sim


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_outputs_obey_the_contract_at_any_batch_size(trained, batch):
    model_dir, _ = trained
    rng = np.random.default_rng(batch)
    x = np.stack([rng.normal(1, 0.3, (DEFAULT_GRID.npix,)),
                  rng.uniform(0, 1, (DEFAULT_GRID.npix,))], 0)[None].repeat(batch, 0)
    out = run_onnx(model_dir / "model.onnx", x.astype(np.float32))
    assert out["probs"].shape == (batch, len(LABEL_NAMES))
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0, atol=1e-5)
    assert (out["probs"] >= 0).all()
    for name in ("entropy", "epistemic", "z", "z_sigma"):
        assert out[name].shape == (batch,) and out[name].dtype == np.float32
    assert (out["z_sigma"] > 0).all()
    assert (out["epistemic"] >= 0).all() and (out["epistemic"] <= out["entropy"] + 1e-5).all()
