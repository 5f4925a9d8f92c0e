"""Quality flags in POST /v1/spectra:classify, over real HTTP (service/inference/quality.py).

Pure Gaussian noise came back QSO at P = 0.9999 with nothing to say it was noise; now it
carries ``no_signal`` and ``low_snr``. The shipped model (v4 on) decides ``no_signal`` with its
template fit (z_warning z_no_signal); the tiny test model has none, so the input's own
signal test decides there. A real SDSS spectrum raises neither.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.inference.quality import LOW_SNR_FLAG, NO_SIGNAL
from service.inference.repository import ModelRepository
from service.spectra import Source, read_spectra
from tests.support.http_service import Service

pytestmark = pytest.mark.e2e
URL = "/v1/spectra:classify"
SHIPPED = Path(__file__).resolve().parents[3] / "models"
# the version that answers when none is named, as the repository itself resolves it
LATEST = ModelRepository(SHIPPED).resolve("spectrum_classifier", None)


@pytest.fixture(scope="module")
def shipped_service(tmp_path_factory):
    """`specula serve` on the shipped repository: its latest version (an in-graph template fit,
    v4 on) answers."""
    if not (SHIPPED / "spectrum_classifier" / "4" / "model.onnx").is_file():
        pytest.skip("shipped v4 absent")
    svc = Service(SHIPPED, tmp_path_factory.mktemp("quality-logs") / "service.log")
    yield svc
    svc.stop()


def noise_body(n: int = 3) -> bytes:
    """n spectra of zero-mean Gaussian noise with honest errors, as JSON arrays."""
    rng = np.random.default_rng(11)
    lam = np.geomspace(3700.0, 9100.0, 3800)
    spectra = [{"object_id": f"noise-{i}", "wavelength": lam.tolist(),
                "flux": rng.normal(0.0, s, lam.size).tolist(),
                "ivar": np.full(lam.size, s ** -2.0).tolist()}
               for i, s in enumerate((0.5, 1.0, 3.0)[:n])]
    return json.dumps({"spectra": spectra}).encode()


def classify(svc: Service, body: bytes, name: str) -> list[dict]:
    r = svc.client.post(URL, files={"files": (name, body)})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_noise_is_flagged_no_signal_and_low_snr_by_the_served_model(shipped_service):
    results = classify(shipped_service, noise_body(), "noise.json")
    assert [r["version"] for r in results] == [LATEST] * 3
    for r in results:
        assert {"no_signal", "low_snr"} <= set(r["quality_flags"]), r["quality_flags"]
        assert r["quality"] & (NO_SIGNAL.bit | LOW_SNR_FLAG.bit) == NO_SIGNAL.bit | LOW_SNR_FLAG.bit


def test_a_real_sdss_spectrum_is_neither_low_snr_nor_no_signal(shipped_service, sdss_spec_path):
    (r,) = classify(shipped_service, sdss_spec_path.read_bytes(), "spec.fits")
    assert r["version"] == LATEST
    assert not {"low_snr", "no_signal"} & set(r["quality_flags"]), r["quality_flags"]
    assert r["quality"] & (NO_SIGNAL.bit | LOW_SNR_FLAG.bit) == 0


def test_a_narrow_spectrum_is_flagged_little_coverage(shipped_service, sdss_spec_path):
    """The SDSS spectrum cut at 6000 Å covers about half the grid: classified, and flagged."""
    s = read_spectra(Source.from_path(sdss_spec_path))[1][0]
    keep = s.wavelength < 6000.0
    body = json.dumps({"object_id": "narrow", "wavelength": s.wavelength[keep].tolist(),
                       "flux": s.flux[keep].tolist(), "ivar": s.ivar[keep].tolist(),
                       "mask": s.mask[keep].tolist()}).encode()
    (r,) = classify(shipped_service, body, "narrow.json")
    assert "little_coverage" in r["quality_flags"]
    assert not {"low_snr", "no_signal"} & set(r["quality_flags"]), r["quality_flags"]


def test_noise_is_flagged_no_signal_by_the_input_test_without_a_template_fit(service):
    """The tiny model has no z_warning: the signal test on the input alone decides."""
    results = classify(service, noise_body(), "noise.json")
    assert all("z_warning" not in r for r in results)
    for r in results:
        assert {"no_signal", "low_snr"} <= set(r["quality_flags"]), r["quality_flags"]
