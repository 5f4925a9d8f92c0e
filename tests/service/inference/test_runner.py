"""OnnxRunner: the provider it really uses, spinning off, and parity with torch."""

from __future__ import annotations

import numpy as np
import torch
from tiny_classifier import OUTPUTS, TinyClassifier

from service.inference.repository import ModelRepository
from service.inference.runner import OnnxRunner, session_options


def test_cpu_provider_reported_and_outputs_match_torch(model_repo):
    mv = ModelRepository(model_repo).load("spectrum_classifier", 1)
    runner = OnnxRunner(mv.onnx, device="cpu")
    assert runner.provider == "CPUExecutionProvider"
    assert runner.output_names == OUTPUTS
    torch.manual_seed(1)  # version 1 was exported from seed 1
    model = TinyClassifier().eval()
    x = np.random.default_rng(0).normal(size=(5, 2, 4076)).astype(np.float32)
    got = runner.run({"spectrum": x})
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    for name, w in zip(OUTPUTS, want):
        np.testing.assert_allclose(got[name], w.numpy(), rtol=1e-4, atol=1e-5)


def test_spinning_is_off():
    so = session_options()
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.inter_op_num_threads == 1


def test_cuda_batches_are_padded_to_powers_of_two():
    """Row counts a CUDA batch is padded to (see runner's docstring: one cuDNN algorithm
    search per shape, so the shapes must be few)."""
    from service.inference.runner import bucket_rows, pad_rows

    assert [bucket_rows(n) for n in (0, 1, 2, 3, 4, 5, 300, 1024, 1025)] == \
        [1, 1, 2, 4, 4, 8, 512, 1024, 2048]
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert pad_rows(x, 3) is x
    padded = pad_rows(x, 4)
    np.testing.assert_array_equal(padded, [[0, 1], [2, 3], [4, 5], [0, 0]])
