"""Shared fixtures: paths to the real survey files in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the property tests on a fixed seed: a run is reproducible, and a failure there is a
# regression, not a new corner that a random draw happened to reach today. Locally they keep
# exploring (and remember what they found in .hypothesis/), which is how new corners are found.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

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
