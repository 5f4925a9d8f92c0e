"""The training pipeline end to end on a synthetic dataset: train → ONNX → manifest → report,
and the exported graph served by the same code path as the service (preprocess + ORT)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from service.lightcones import PREPROCESS_VERSION, LightconeGrid
from tests.support.lc_training_helpers import tiny_config, write_fake_dataset
from training.lightcone import dataset
from training.lightcone.cli import main
from training.lightcone.config import config_to_dict
from training.lightcone.export_onnx import export, run_onnx, sha256_file, width_tol
from training.lightcone.export_saliency import head_from_onnx
from training.lightcone.model import LightconeNet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lc")
    cfg = tiny_config()
    write_fake_dataset(cfg, tmp / "data")
    cfg_path = tmp / "tiny.json"
    cfg_path.write_text(json.dumps(config_to_dict(cfg)))
    # the entry point `specula train lightcone` dispatches to
    assert main(["--config", str(cfg_path), "--out", str(tmp / "models"), "--runs",
                 str(tmp / "runs"), "--data-dir", str(tmp / "data"), "--skip-build",
                 "--no-progress"]) == 0
    manifest = json.loads((tmp / "models" / cfg.name / "1" / "manifest.json").read_text())
    return cfg, tmp, manifest


def test_dataset_file_layout(trained):
    cfg, tmp, _ = trained
    path = dataset.dataset_path(cfg, tmp / "data")
    info = dataset.describe(path)
    assert info["attempted"] == 48 and info["rejected_tau"] > 0
    assert info["accepted"] + info["rejected_tau"] == 48
    tr, te = dataset.load(path, cfg, "train"), dataset.load(path, cfg, "test")
    assert tr["cubes"].dtype == np.float16 and tr["cubes"].shape[1:] == (4, 4, 32)
    assert not set(tr["index"]) & set(te["index"])


def test_manifest_contract(trained):
    cfg, tmp, m = trained
    d = tmp / "models" / cfg.name / "1"
    assert m["kind"] == "lightcone-regressor" and m["preprocess_version"] == PREPROCESS_VERSION
    assert m["sha256"] == sha256_file(d / "model.onnx")
    assert m["inputs"] == [{"name": "lightcone", "dtype": "float32", "shape": [-1, 1, 4, 4, 16]}]
    assert [o["name"] for o in m["outputs"]] == ["theta_mean", "theta_sigma"]
    assert [p["name"] for p in m["parameters"]] == cfg.param_names
    assert "m_WDM" in m["not_modelled"]
    # ORT vs PyTorch, float32 both: the rounding export_onnx.width_tol derives for these cubes
    assert m["parity"]["max_diff_over_prior_width"] < m["parity"]["tolerance_over_prior_width"]
    assert LightconeGrid.from_manifest(m["grid"]) == cfg.grid.model_grid()
    assert m["metrics"]["n_test"] > 0 and m["training"]["wall_time_s"] >= 0
    assert all(s >= 1.0 for s in m["calibration"]["sigma_scale"])  # only widens


def test_report(trained):
    cfg, tmp, _ = trained
    d = tmp / "models" / cfg.name / "1"
    rep = json.loads((d / "report.json").read_text())
    assert set(rep["per_parameter"]) == set(cfg.param_names)
    for v in rep["per_parameter"].values():
        assert 0.0 <= v["coverage_68"] <= v["coverage_95"] <= 1.0 and v["mean_sigma_over_prior_width"] > 0
    assert "R²" in (d / "report.md").read_text()


def test_dynamic_batch_and_physical_units(trained):
    cfg, tmp, _ = trained
    path = tmp / "models" / cfg.name / "1" / "model.onnx"
    x = np.random.default_rng(0).normal(0, 0.1, (5, 1, 4, 4, 16)).astype(np.float32)
    out5 = run_onnx(path, x)
    out1 = run_onnx(path, x[2:3])
    # batch 1 and batch 5 block their sums differently: float32 rounding on both sides
    head = head_from_onnx(path.parent)[1]
    tol, width = width_tol(head, x[2:3]), head.width.numpy()
    for name in out1:
        assert (np.abs(out1[name][0] - out5[name][2]) / width).max() < tol, name
    assert (out5["theta_sigma"] > 0).all()
    lows = np.array([p.low for p in cfg.priors()])
    highs = np.array([p.high for p in cfg.priors()])
    span = highs - lows  # an untrained-ish net stays within a few prior widths
    assert (np.abs(out5["theta_mean"] - (lows + highs) / 2) < 5 * span).all()


def test_noise_trained_pipeline(tmp_path):
    """``noise.train``: fresh thermal noise per batch, lightcone-2 preprocessing, noisy
    evaluation, an observing-time sweep and the wedge number, all through the CLI (uv coverage
    faked in the cache: computing it is the slow part, and is tested in test_dataset)."""
    pytest.importorskip("tools21cm")
    from training.lightcone.noise import _key

    cfg = tiny_config(32)
    cfg.version = 3
    cfg.grid.preprocess_version = "lightcone-2"
    cfg.noise.train = True
    cfg.noise.evaluate = True
    cfg.noise.eval_realisations = 2
    cfg.noise.val_realisations = 2
    cfg.noise.eval_obs_times_h = [100.0]
    cfg.noise.train_obs_time_range_h = [300.0, 3000.0]
    data = tmp_path / "data"
    write_fake_dataset(cfg, data)
    n = cfg.grid.n_xy
    old = tiny_config()  # an untrained lightcone-1 model on the same grid, to compare with
    torch.manual_seed(0)
    export(LightconeNet(old.model, old.grid.model_grid(), 5).eval(), old, np.ones(5, np.float32),
           tmp_path / "old", parity_x=np.zeros((2, *old.grid.model_grid().shape), np.float32))
    cfg.compare = [str(tmp_path / "old")]
    np.savez(data / f"uv-{_key(cfg)}.npz", z=np.array([6.0, 18.0]),
             uv=np.random.default_rng(0).uniform(1, 30, (2, n, n)), n_ant=np.array(512))
    cfg_path = tmp_path / "tiny3.json"
    cfg_path.write_text(json.dumps(config_to_dict(cfg)))
    assert main(["--config", str(cfg_path), "--out", str(tmp_path / "models"), "--runs",
                 str(tmp_path / "runs"), "--data-dir", str(data), "--skip-build",
                 "--no-progress"]) == 0
    d = tmp_path / "models" / cfg.name / "3"
    m = json.loads((d / "manifest.json").read_text())
    assert m["preprocess_version"] == "lightcone-2"
    assert m["noise"]["trained_with_noise"] and m["noise"]["obs_time_h"] == cfg.noise.obs_time_h
    assert m["noise"]["train_obs_time_range_h"] == [300.0, 3000.0]
    assert "thermal noise" in m["not_modelled"]["instrument"]
    rep = json.loads((d / "report.json").read_text())
    noisy = rep["noise"]
    assert noisy["preprocess_version"] == "lightcone-2" and noisy["realisations_per_cube"] == 2
    assert set(noisy["per_parameter"]) == set(cfg.param_names)
    assert set(rep["obs_time_sweep"]) == {"100"}
    assert all(0 <= v < 1e-3 for v in rep["wedge"]["power_kept"].values())
    assert set(rep["compare"]) == {"v1 (lightcone-1), noiseless test cubes",
                                   f"v1 (lightcone-1), noisy test cubes ({cfg.noise.obs_time_h:g} h)"}
    md = (d / "report.md").read_text()
    assert "trained with noise" in md and "observing time" in md and "v1 (lightcone-1)" in md


def test_time_box_stops_after_the_first_epoch_and_keeps_the_best():
    from training.lightcone.train import train

    cfg = tiny_config()
    cfg.train.epochs, cfg.train.max_steps, cfg.train.max_seconds = 5, 0, 1e-9
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (8, *cfg.grid.model_grid().shape)).astype(np.float32)
    y = rng.uniform(0, 1, (8, 5)).astype(np.float32)
    _, hist = train(cfg, (x, y), (x[:4], y[:4]), log=lambda m: None)
    assert hist["stopped_on_time"] == 1 and len(hist["val_nll"]) == 1
    assert hist["best_epoch"] == 1
