"""The quality flags (service/inference/quality.py) from real preprocessed spectra."""

from __future__ import annotations

import numpy as np
import pytest

from service.inference.quality import (
    FLAGS,
    LITTLE_COVERAGE,
    LOW_SNR_FLAG,
    MOSTLY_MASKED,
    NO_SIGNAL,
    OOD_EPISTEMIC,
    OUT_OF_DISTRIBUTION,
    Z_MULTIMODAL,
    quality,
    quality_names,
)
from service.spectra import make_spectrum
from service.spectra.preprocess import DEFAULT_GRID, preprocess, snr_statistics

LAM = DEFAULT_GRID.wavelength  # on the grid's own pixels: resampling keeps each pixel's ivar


def prepared(flux, ivar=None, mask=None, lam=LAM):
    return preprocess(make_spectrum(lam, flux, ivar, mask, {"object_id": "t"}), DEFAULT_GRID)


def outputs(n: int, epistemic: float = 0.01, z_warning: int | None = None) -> dict:
    out = {"epistemic": np.full(n, epistemic, np.float32)}
    if z_warning is not None:
        out["z_warning"] = np.full(n, z_warning, np.int32)
    return out


@pytest.fixture(scope="module")
def noise():
    rng = np.random.default_rng(3)
    return prepared(rng.normal(0.0, 2.0, LAM.size), np.full(LAM.size, 0.25))


@pytest.fixture(scope="module")
def bright():
    """A continuum at S/N 10 per pixel, with a line, honest errors."""
    rng = np.random.default_rng(4)
    flux = 10.0 + 30.0 * np.exp(-0.5 * ((LAM - 6563.0) / 4.0) ** 2)
    return prepared(flux + rng.normal(0.0, 1.0, LAM.size), np.ones(LAM.size))


def test_bits_and_names_are_one_table():
    bits = [f.bit for f in FLAGS]
    assert bits == [1 << i for i in range(len(FLAGS))]  # one bit each, never renumbered
    assert len({f.name for f in FLAGS}) == len(FLAGS)
    assert quality_names(LOW_SNR_FLAG.bit | NO_SIGNAL.bit) == ["low_snr", "no_signal"]
    assert quality_names(0) == []


def test_median_snr_is_flux_times_sqrt_ivar_from_the_model_input():
    """Recovered from the two channels alone (flux/s and ivar·s²/(1+ivar·s²)), whatever s."""
    flux = np.linspace(1.0, 5.0, LAM.size)  # S/N = flux·√ivar = flux·2
    mask = np.zeros(LAM.size, bool)
    mask[:1000] = True  # masked pixels do not count
    p = prepared(flux, np.full(LAM.size, 4.0), mask)
    median, _ = snr_statistics(p.x[None])
    assert median[0] == pytest.approx(np.median(2.0 * flux[1000:]), rel=1e-4)


def test_signal_significance_of_noise_is_order_one_and_of_a_source_large(noise, bright):
    _, sig = snr_statistics(np.stack([noise.x, bright.x]))
    assert abs(sig[0]) < 4.0 and sig[1] > 1000.0


def test_noise_without_a_template_fit_is_low_snr_and_no_signal(noise):
    (q,) = quality([noise], outputs(1))
    assert quality_names(int(q)) == ["low_snr", "no_signal"]


def test_a_model_with_z_warning_decides_no_signal_and_multimodal(noise, bright):
    """Where the model has a template fit, its z_no_signal is the flag (no input test)."""
    assert not quality([noise], outputs(1, z_warning=0))[0] & NO_SIGNAL.bit
    assert quality([bright], outputs(1, z_warning=8))[0] == NO_SIGNAL.bit
    assert quality([bright], outputs(1, z_warning=1 | 2 | 4))[0] == Z_MULTIMODAL.bit


def test_a_bright_spectrum_raises_nothing(bright):
    assert quality([bright], outputs(1))[0] == 0
    assert quality([bright], outputs(1, z_warning=0))[0] == 0


def test_epistemic_above_threshold_is_out_of_distribution(bright):
    q = quality([bright, bright], {"epistemic": np.array([OOD_EPISTEMIC * 0.99,
                                                          OOD_EPISTEMIC * 1.01], np.float32)})
    assert q.tolist() == [0, OUT_OF_DISTRIBUTION.bit]


def test_coverage_and_masking_flags(bright):
    lam = LAM[LAM < 6000.0]  # ~55 % of the grid
    narrow = prepared(np.full(lam.size, 10.0), np.ones(lam.size), lam=lam)
    mask = np.zeros(LAM.size, bool)
    mask[::2] = True  # half the grid has no good data
    holey = prepared(np.full(LAM.size, 10.0), np.ones(LAM.size), mask)
    q = quality([narrow, bright, holey], outputs(3))  # rows keep their order
    assert q.tolist() == [LITTLE_COVERAGE.bit | MOSTLY_MASKED.bit, 0, MOSTLY_MASKED.bit]


def test_no_rows():
    assert quality([], {}).shape == (0,)
