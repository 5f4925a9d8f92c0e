"""Shared paths and small cube writers for the lightcone tests (files are written per test)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SIMRUN = REPO.parent / "shared" / "data" / "21cmfast" / "simrun_0.h5"


@pytest.fixture(scope="session")
def simrun_path() -> Path:
    if not SIMRUN.is_file():
        pytest.skip(f"reference file {SIMRUN} not present")
    return SIMRUN
