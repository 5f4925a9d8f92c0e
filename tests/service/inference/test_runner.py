"""OnnxRunner: the provider it really uses, spinning off, and parity with torch."""

from __future__ import annotations

import numpy as np
import torch

from service.inference.repository import ModelRepository
from service.inference.runner import OnnxRunner, session_options
from tests.support.tiny_classifier import OUTPUTS, TinyClassifier


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


def test_bound_path_gives_the_plain_path_results_at_every_batch_size(model_repo):
    """The CUDA path's IOBinding logic (padding, per-shape sessions and buffers, slicing),
    run on CPU where CI has no GPU: bit for bit the plain session's results on the padded
    batch, to rounding the unpadded one's (a GEMM's blocking may depend on the row count),
    and no run's results alias another's (the buffers are reused)."""
    from service.inference.runner import bucket_rows, pad_rows

    mv = ModelRepository(model_repo).load("spectrum_classifier", 1)
    plain = OnnxRunner(mv.onnx, device="cpu", intra_op_threads=1)
    bound = OnnxRunner(mv.onnx, device="cpu", intra_op_threads=1, iobinding=True,
                       session_per_shape=True)
    x = np.random.default_rng(2).normal(size=(70, 2, 4076)).astype(np.float32)
    kept = []
    for n in (1, 3, 7, 64, 70, 3):
        got = bound.run({"spectrum": x[:n]})
        padded = plain.run({"spectrum": pad_rows(x[:n], bucket_rows(n))})
        unpadded = plain.run({"spectrum": x[:n]})
        for name in OUTPUTS:
            assert got[name].shape == unpadded[name].shape
            np.testing.assert_array_equal(got[name], padded[name][:n])
            np.testing.assert_allclose(got[name], unpadded[name], rtol=1e-5, atol=1e-6)
        kept.append((got, {k: v.copy() for k, v in got.items()}))
    for got, copy in kept:
        for name in OUTPUTS:
            np.testing.assert_array_equal(got[name], copy[name])
    shapes = sorted({key[2][0] for key in bound._buffers})
    assert shapes == [1, 4, 8, 64, 128]
    # one session per padded shape (ORT's CUDA Conv rebuilds its cuDNN plans whenever a
    # session's input shape changes), each made once
    assert sorted(bound._sessions) == shapes
