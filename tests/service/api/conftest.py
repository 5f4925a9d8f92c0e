"""Real HTTP over loopback: each fixture starts `specula serve` (uvicorn) on a free port.

The service runs in its own process, exactly as deployed, so signals (SIGTERM drain, SIGHUP
reload) and the registry of a fresh process are tested for real. The model repository holds
the tiny, untrained classifier of tests/support/tiny_classifier.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.http_service import Service
from tests.support.tiny_classifier import write_tiny_model


@pytest.fixture(scope="session")
def api_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("api-models")
    write_tiny_model(root, version=1)
    write_tiny_model(root, version=2)
    return root


@pytest.fixture(scope="session")
def service(api_repo, tmp_path_factory):
    """The shared service: small batches (so splitting is exercised), 32 MB body limit."""
    svc = Service(api_repo, tmp_path_factory.mktemp("logs") / "service.log",
                  max_batch_size=64, max_body_bytes=32 * 1024 * 1024)
    yield svc
    svc.stop()


@pytest.fixture
def start_service(tmp_path):
    """Factory for a dedicated service (own settings, own repository copy)."""
    started: list[Service] = []

    def start(repo: Path, **settings) -> Service:
        svc = Service(repo, tmp_path / f"service-{len(started)}.log", **settings)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()
