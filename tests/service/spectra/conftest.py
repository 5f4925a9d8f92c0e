"""Fixtures for the spectra tests: the real DESI files shipped inside specutils."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def desi_paths() -> dict[str, Path]:
    """specutils' real DESI test files, from the installed package (not copied)."""
    specutils = pytest.importorskip("specutils")
    d = Path(specutils.__file__).parent / "io" / "default_loaders" / "tests" / "desi_test_data"
    if not d.exists():
        pytest.skip("specutils DESI test data not installed")
    return {p.name: p for p in sorted(d.glob("*.fits"))}
