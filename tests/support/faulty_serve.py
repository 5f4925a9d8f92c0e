"""`specula serve` with a fault injected into ONNX Runtime, for tests/ops/test_reliability.py
and tests/ops/test_drain.py.

A batch whose input holds the sentinel value POISON anywhere is run through the *real* ORT
session with one pixel cut off, so ONNX Runtime itself raises (InvalidArgument on the input
shape) inside the batcher's thread, exactly as a runtime fault would. Every other batch runs
normally. A batch holding SLOW instead sleeps SLOW_S in that thread first: a batch that
outlasts a test's window (a graceful-shutdown limit, a full queue, a deadline). Used as:
python -m tests.support.faulty_serve   (from the repository root, same environment as
`specula serve`).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from service.cli import main
from service.inference.runner import OnnxRunner

POISON = np.float32(-7777.0)
SLOW = np.float32(-8888.0)
SLOW_S = 5.0
_real_run = OnnxRunner.run


def run_with_fault(self: OnnxRunner, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if any((a == SLOW).any() for a in inputs.values()):
        time.sleep(SLOW_S)
    if any((a == POISON).any() for a in inputs.values()):
        inputs = {k: np.ascontiguousarray(a[..., :-1]) for k, a in inputs.items()}
    return _real_run(self, inputs)


OnnxRunner.run = run_with_fault

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
