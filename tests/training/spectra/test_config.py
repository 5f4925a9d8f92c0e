"""Configs are data: both shipped JSON files load, and a typo is an error, not a default."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.spectra.config import config_from_dict, config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parents[3] / "training" / "configs"


@pytest.mark.parametrize("name", ["spectra.json", "spectra_tiny.json"])
def test_shipped_configs_load_and_round_trip(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.name == "spectrum_classifier" and cfg.train.members >= 2
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_unknown_key_is_rejected():
    with pytest.raises(ValueError, match="unknown keys"):
        config_from_dict({"train": {"epochz": 3}})


def test_wrong_type_is_rejected():
    with pytest.raises(ValueError, match="expected int"):
        config_from_dict({"data": {"n_train": "many"}})
