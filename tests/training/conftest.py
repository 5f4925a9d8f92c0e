"""Training tests share 2 CPU cores with everything else: one torch thread avoids oversubscription."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)
    yield
