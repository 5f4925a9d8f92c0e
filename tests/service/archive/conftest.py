"""Fixtures: a model repository (the shipped model, else the tiny test model) and a small
archive of real-format files written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.archive_files import N_GOOD, write_archive

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def archive_models(tmp_path_factory) -> Path:
    shipped = REPO / "models"
    if (shipped / "spectrum_classifier" / "1" / "model.onnx").exists():
        return shipped
    # deferred: the tiny model is built with torch, needed only where no model is shipped
    from tests.support.tiny_classifier import write_tiny_model

    root = tmp_path_factory.mktemp("archive-models")
    write_tiny_model(root, version=1)
    return root


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(root directory, {bad file path: expected error code})"""
    root = tmp_path_factory.mktemp("archive") / "in"
    return root, write_archive(root, N_GOOD)
