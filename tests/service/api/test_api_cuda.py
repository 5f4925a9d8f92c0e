"""The CUDA execution provider end to end, with the shipped model.

Runs only where onnxruntime has a CUDAExecutionProvider (onnxruntime-gpu and a GPU); CI has
neither, so there it is skipped, and bench/gpu/device_check.sh runs it on a GPU machine.
What it holds: a CUDA session really runs on CUDA (ORT falls back to CPU silently), its
outputs through IOBinding agree with the CPU session's at every batch size the batcher
makes, and the service reports the provider in /v2 metadata and in the metrics, and answers
classify and saliency requests from the GPU with the CPU's numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.inference.repository import ModelRepository
from service.inference.runner import OnnxRunner
from service.spectra import Source, preprocess, read_spectra

CUDA = "CUDAExecutionProvider"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    CUDA not in ort.get_available_providers(),
    reason="no CUDAExecutionProvider here (needs onnxruntime-gpu and a GPU)")]
SHIPPED = Path(__file__).resolve().parents[3] / "models"
MODEL = "spectrum_classifier"


@pytest.fixture(scope="module")
def shipped():
    return ModelRepository(SHIPPED).load(MODEL)


@pytest.fixture(scope="module")
def rows(shipped, sdss_spec_path) -> np.ndarray:
    """300 inputs: the real SDSS spectrum preprocessed, then perturbed row by row."""
    x1 = preprocess(read_spectra(Source.from_path(sdss_spec_path))[1][0],
                    shipped.manifest.spectrum_grid()).x
    noise = np.random.default_rng(0).normal(scale=0.05, size=(300, *x1.shape))
    return (x1[None] + noise * (x1[None] != 0)).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 7, 64, 300])
def test_cuda_session_agrees_with_cpu(shipped, rows, batch):
    gpu = OnnxRunner(shipped.onnx, device="cuda")
    cpu = OnnxRunner(shipped.onnx, device="cpu")
    assert gpu.provider == CUDA, "ORT fell back to CPU: CUDA could not initialise"
    x = rows[:batch]
    got, want = gpu.run({"spectrum": x}), cpu.run({"spectrum": x})
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape
        print(f"batch {batch} {name}: max |cuda - cpu| {np.abs(got[name] - want[name]).max():.2e}")
        # fp32 on both (TF32 off, runner.CUDA_OPTIONS); only the summation order differs
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(got["probs"].argmax(1), want["probs"].argmax(1))


def test_service_serves_from_cuda(start_service, sdss_spec_path, shipped):
    svc = start_service(SHIPPED, device="cuda", intra_op_threads=0,
                        preprocess_workers=0, max_batch_size=256)
    meta = svc.client.get(f"/v2/models/{MODEL}").json()
    assert meta["parameters"]["provider"] == CUDA
    # every served version of the model ran on CUDA, one info series each
    versions = [d.name for d in (SHIPPED / MODEL).iterdir() if d.name.isdigit()]
    for v in versions:
        assert svc.metric("specula_model_info", model=MODEL, version=v, provider=CUDA) == 1, v
    assert svc.metric("specula_model_info", model=MODEL) == len(versions)

    body = sdss_spec_path.read_bytes()
    r = svc.client.post("/v1/spectra:classify", files={"files": ("spec.fits", body)})
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    x = preprocess(read_spectra(Source.from_path(sdss_spec_path))[1][0],
                   shipped.manifest.spectrum_grid()).x
    want = OnnxRunner(shipped.onnx, device="cpu").run({"spectrum": x[None]})["probs"][0]
    labels = [lab.name for lab in shipped.manifest.labels]
    got = np.array([res["probabilities"][name] for name in labels])
    np.testing.assert_allclose(got, want, atol=1e-5)

    # an exposure-sized OIP request: split into batches on the GPU, reassembled in order
    r = svc.infer_rows(1000)
    assert r.status_code == 200, r.text
    assert svc.metric("specula_inference_items_total", model=MODEL) >= 1001

    r = svc.client.post("/v1/spectra:saliency", content=body)
    assert r.status_code == 200, r.text
    flux = np.array(r.json()["results"][0]["saliency"]["flux"], dtype=np.float32)
    assert np.isfinite(flux).all() and np.abs(flux).max() > 0
