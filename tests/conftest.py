"""Shared fixtures: paths to the real survey files in ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared/data not present")
    return SHARED


@pytest.fixture(scope="session")
def sdss_spec_path(shared_data: Path) -> Path:
    return shared_data / "sdss" / "spec-1198-52669-0063.fits"
