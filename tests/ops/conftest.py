"""Fixtures of the operations tests: a real `specula serve` (or a wrapped one) on loopback.

Reuses tests/service/api/http_service.py (imported by path, as tests/service/api/conftest.py
does for the tiny model builder) and bench/loadgen.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for extra in (TESTS / "service" / "api", TESTS / "service" / "inference", TESTS / "ops",
              TESTS / "ops" / "hostile",
              TESTS.parent / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from ops_service import OpsService
from tiny_classifier import write_tiny_model


@pytest.fixture(scope="session")
def ops_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ops-models")
    write_tiny_model(root, version=1)
    return root


@pytest.fixture(scope="session")
def ops_service(ops_repo, tmp_path_factory):
    """One shared service for the hostile-input and disconnect tests: small limits so that
    the corpus hits them (4 MB body, 64 MB decoded file, 50 file parts)."""
    svc = OpsService(ops_repo, tmp_path_factory.mktemp("ops-logs") / "service.log",
                     max_batch_size=32, max_body_bytes=4 * 1024 * 1024,
                     max_file_bytes=64 * 1024 * 1024, max_files=50)
    yield svc
    svc.stop()


@pytest.fixture
def start_ops(tmp_path):
    """Factory: a dedicated service, optionally run through another command (``argv``)."""
    started: list[OpsService] = []

    def start(repo: Path, argv: list[str] | None = None, wait: bool = True, **settings):
        svc = OpsService(repo, tmp_path / f"service-{len(started)}.log", argv=argv,
                         wait=wait, **settings)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()
