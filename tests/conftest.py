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


@pytest.fixture(scope="session")
def desi_paths() -> dict[str, Path]:
    """specutils' real DESI test files, from the installed package (not copied)."""
    specutils = pytest.importorskip("specutils")
    d = Path(specutils.__file__).parent / "io" / "default_loaders" / "tests" / "desi_test_data"
    if not d.exists():
        pytest.skip("specutils DESI test data not installed")
    return {p.name: p for p in sorted(d.glob("*.fits"))}
