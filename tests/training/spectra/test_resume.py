"""Resumable training: a paused member continues exactly, and a validation plateau stops it."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import training.spectra.train as train_mod
from service.spectra import DEFAULT_GRID
from training.cli import main as train_main
from training.spectra.config import (
    Config,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from training.spectra.train import member_path, train_member

TINY = Path(__file__).resolve().parents[3] / "training" / "configs" / "spectra_tiny.json"


def tiny(**train) -> Config:
    """One small member on 64 spectra, 4 steps per epoch: each session takes well under a second."""
    tc = TrainConfig(members=1, epochs=2, batch_size=16, threads=1, **train)
    return Config(model=ModelConfig(widths=[4, 4, 4, 4, 4], stem_channels=4, head_hidden=8), train=tc)


def data(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 0.3, (n, 2, DEFAULT_GRID.npix)).astype(np.float16)
    x[:, 1] = 1.0
    return {"x": x, "label": rng.integers(0, 13, n).astype(np.int16),
            "z": rng.uniform(0, 3, n).astype(np.float32)}


TRAIN, VAL = data(64, 0), data(32, 1)


def quiet(_msg: str) -> None:
    pass


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_member_paused_after_an_epoch_continues_exactly(tmp_path):
    whole = train_member(0, tiny(), TRAIN, VAL, quiet, tmp_path / "a.pt")
    cfg = tiny(session_epochs=1)
    first = train_member(0, cfg, TRAIN, VAL, quiet, tmp_path / "b.pt")
    assert not first.finished and first.steps_done == 4 and len(first.history) == 1
    saved = torch.load(tmp_path / "b.pt", weights_only=False)
    assert saved["step"] == 4 and saved["epoch"] == 1
    assert all(int(s["step"]) == 4 for s in saved["opt"]["state"].values())  # AdamW's own count
    second = train_member(0, cfg, TRAIN, VAL, quiet, tmp_path / "b.pt")
    assert second.finished and second.steps_done == 8
    assert [h["epoch"] for h in second.history] == [0, 1]  # appended, not restarted
    assert second.history[0] == first.history[0]
    assert all(int(s["step"]) == 8 for s in torch.load(tmp_path / "b.pt", weights_only=False)["opt"]["state"].values())
    assert same_weights(whole, second)
    assert whole.history == second.history


def test_a_member_stopped_mid_epoch_by_the_time_budget_continues_exactly(tmp_path, monkeypatch):
    whole = train_member(0, tiny(), TRAIN, VAL, quiet, tmp_path / "a.pt")
    clock = iter(range(10**6))  # every time.time() call is one second later
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(time=lambda: float(next(clock))))
    paused = train_member(0, tiny(), TRAIN, VAL, quiet, tmp_path / "b.pt", deadline=6.0)
    assert not paused.finished and 0 < paused.steps_done < 4 and paused.history == []
    monkeypatch.undo()
    resumed = train_member(0, tiny(), TRAIN, VAL, quiet, tmp_path / "b.pt")
    assert resumed.finished and resumed.steps_done == 8
    assert same_weights(whole, resumed)


def test_training_stops_when_the_validation_loss_plateaus(tmp_path):
    cfg = tiny(patience=2, min_delta=1e3)  # no epoch can improve by 1000
    cfg.train.epochs = 10
    m = train_member(0, cfg, TRAIN, VAL, quiet, tmp_path / "p.pt")
    assert m.finished and len(m.history) == 3  # the first epoch sets the best, two more fail
    assert m.steps_done == 12
    assert all("val_loss" in h for h in m.history)


@pytest.mark.slow
def test_cli_pauses_with_a_resume_hint_and_resume_finishes_the_run(tmp_path, capsys, shared_data):
    cfg = json.loads(TINY.read_text())
    cfg["train"].update(epochs=2, max_steps=0, session_epochs=1, members=1)
    cfg["data"].update(n_train=64, n_test=32)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    args = ["spectra", "--out", str(tmp_path / "models"), "--runs", str(tmp_path / "runs"),
            "--data-dir", str(tmp_path / "data"), "--no-progress"]
    assert train_main([*args, "--config", str(path)]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"--resume {run_dir}" in capsys.readouterr().out
    assert member_path(run_dir, 0).exists() and not (tmp_path / "models").exists()
    assert train_main([*args, "--config", str(path), "--resume"]) == 0  # newest run of the config
    man = json.loads((tmp_path / "models" / "spectrum_classifier" / "1" / "manifest.json").read_text())
    assert man["training"]["steps_per_member"] == [4]
    assert [h["epoch"] for h in man["training"]["history_per_member"][0]] == [0, 1]
    assert "resuming" in (run_dir / "train.log").read_text()


def test_config_round_trips_the_new_training_knobs():
    cfg = tiny(patience=3, session_epochs=2, checkpoint_every_s=60.0)
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg
