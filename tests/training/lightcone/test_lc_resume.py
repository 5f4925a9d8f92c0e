"""Lightcone training resumes: a run paused at an epoch boundary and continued takes the steps
an uninterrupted run takes (same weights, same history), and the CLI continues a paused run
with its own config and the dataset runs it pinned, even after the dataset has grown."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.support.lc_training_helpers import tiny_config, write_fake_dataset
from training.common.runs import Paused
from training.lightcone import dataset
from training.lightcone.cli import main
from training.lightcone.config import config_to_dict
from training.lightcone.train import train


def _data(cfg, n=12):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (n, *cfg.grid.model_grid().shape)).astype(np.float32)
    y = rng.uniform(0, 1, (n, 5)).astype(np.float32)
    return x, y


def _tiny():
    cfg = tiny_config()
    cfg.train.epochs, cfg.train.max_steps, cfg.train.patience = 4, 0, 100
    cfg.model.dropout = 0.3  # the global torch generator matters too
    return cfg


def test_paused_and_resumed_equals_uninterrupted(tmp_path):
    cfg = _tiny()
    x, y = _data(cfg)
    net_a, hist_a = train(cfg, (x, y), (x[:4], y[:4]), log=lambda m: None)

    state = tmp_path / "train_state.pt"
    cfg.train.session_seconds = 1e-9  # every session ends after one epoch
    sessions = 0
    while True:
        sessions += 1
        try:
            net_b, hist_b = train(cfg, (x, y), (x[:4], y[:4]), log=lambda m: None,
                                  state_path=state)
            break
        except Paused:
            assert sessions < 10
    assert sessions == cfg.train.epochs  # the last session finishes without pausing
    assert hist_b["val_nll"] == hist_a["val_nll"]
    assert hist_b["train_nll"] == hist_a["train_nll"]
    assert hist_b["best_epoch"] == hist_a["best_epoch"] and hist_b["steps"] == hist_a["steps"]
    for (k, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_refuses_other_data(tmp_path):
    cfg = _tiny()
    cfg.train.session_seconds = 1e-9
    x, y = _data(cfg)
    with pytest.raises(Paused):
        train(cfg, (x, y), (x[:4], y[:4]), log=lambda m: None, state_path=tmp_path / "s.pt")
    with pytest.raises(ValueError, match="trained on 12 cubes, given 10"):
        train(cfg, (x[:10], y[:10]), (x[:4], y[:4]), log=lambda m: None,
              state_path=tmp_path / "s.pt")


def test_cli_pauses_and_resumes_on_the_pinned_runs(tmp_path):
    cfg = tiny_config()
    cfg.train.epochs, cfg.train.max_steps, cfg.train.session_seconds = 3, 0, 1e-9
    path = write_fake_dataset(cfg, tmp_path / "data")
    cfg_path = tmp_path / "tiny.json"
    cfg_path.write_text(json.dumps(config_to_dict(cfg)))
    common = ["--out", str(tmp_path / "models"), "--runs", str(tmp_path / "runs"),
              "--data-dir", str(tmp_path / "data"), "--skip-build", "--no-progress"]
    assert main(["--config", str(cfg_path), *common]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "train_state.pt").exists()
    assert not (tmp_path / "models").exists()  # paused: nothing exported yet
    pinned = json.loads((run_dir / "data.json").read_text())
    assert Path(pinned["file"]) == Path(path).resolve()
    assert sorted(pinned["train"] + pinned["val"] + pinned["test"]) == sorted(
        np.concatenate([dataset.load(Path(path), cfg, s)["index"]
                        for s in ("train", "val", "test")]).tolist())

    # the dataset loses a training run between sessions: the pinned run refuses rather than
    # silently training on other data
    if pinned["train"]:
        with h5py.File(path, "r+") as f:
            f["status"][pinned["train"][0]] = dataset.STATUS["failed"]
        with pytest.raises(ValueError, match="not accepted train runs"):
            main(["--resume", str(run_dir), *common])
        with h5py.File(path, "r+") as f:
            f["status"][pinned["train"][0]] = dataset.STATUS["accepted"]

    # a bare --resume takes the newest run of the config; sessions of one epoch each
    for _ in range(cfg.train.epochs):
        assert main(["--config", str(cfg_path), "--resume", *common]) == 0
        if (tmp_path / "models").exists():
            break
    manifest = json.loads((tmp_path / "models" / cfg.name / "1" / "manifest.json").read_text())
    assert manifest["training"]["epochs_run"] == cfg.train.epochs
    log = (run_dir / "train.log").read_text()
    assert "resumed at epoch 2" in log and "resumed at epoch 3" in log
