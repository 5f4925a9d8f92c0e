"""The import contract (``.importlinter``, docs/architecture.md): io → spectra | lightcones →
inference → api | archive, and training imports only service.io, service.spectra and
service.lightcones. ``lint-imports`` checks it from the repository root."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports() -> str | None:
    """The ``lint-imports`` of this interpreter's environment, else one on PATH."""
    beside = Path(sys.executable).parent / "lint-imports"
    return str(beside) if beside.is_file() else shutil.which("lint-imports")


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None or lint_imports() is None,
                    reason="import-linter is not installed (pip install -e '.[dev]')")
def test_import_contract_is_kept():
    run = subprocess.run([lint_imports(), "--no-cache"], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout
