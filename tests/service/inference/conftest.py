"""A model repository with two versions of a real (tiny, untrained) classifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_classifier import write_tiny_model


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_tiny_model(root, version=1)
    write_tiny_model(root, version=2)
    return root
