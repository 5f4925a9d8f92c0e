"""Fixtures of the operations tests: a real `specula serve` (or a wrapped one) on loopback.

The service process, the wrappers and the load generator are in tests/support/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ops_service import OpsService
from tests.support.tiny_classifier import write_tiny_model


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
