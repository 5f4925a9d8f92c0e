"""Per-spectrum quality flags: one bitmask with names, in the spirit of SDSS/DESI ZWARNING.

A classifier always answers, and confidently: pure Gaussian noise came back QSO at
P = 0.9999. The probabilities cannot say "this is not a spectrum the model knows"; these
flags can. Each is computed from what preprocessing knows about the input (the two-channel
model input, coverage, masked fraction) or from the model's own outputs (epistemic
uncertainty, ``z_warning``). ``quality == 0`` means none was raised; a pipeline routes a
flagged spectrum to template fitting or to a person (docs/service.md, "Quality flags").

This is the one table of flags: names, bits, thresholds and the function computing them.
Bits are never renumbered (stored archives hold them); a new flag takes the next bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.spectra import Prepared
from service.spectra.preprocess import WARN_COVERAGE, WARN_MASKED_FRACTION

from .postprocess import Z_WARNING_BITS

# Median S/N per model-grid pixel below which a spectrum is flagged low_snr. The simulator
# draws S/N ≥ 1.0 per grid pixel (training/config.py snr_min: the model never saw fainter),
# so below 1.0 the classification is an extrapolation. Measured as below (median_snr) on
# the first 1,000 simulated validation spectra (data/spectra-val-*/): measured/true S/N has
# median 1.09 (1–99 %: 0.45–1.78), and 1.5 % of them, all at the training floor, fall under.
LOW_SNR = 1.0
# Mutual information between label and ensemble member (the model's ``epistemic`` output, in
# nats) above which a spectrum is flagged out_of_distribution. Measured by running the shipped
# v3 model (models/spectrum_classifier/3/model.onnx, CPU) on the ``x`` of the first 1,000
# simulated validation spectra (data/spectra-val-4fffdc05bbf2a76c/, 5 chunks): quantiles
# 50 / 90 / 99 / 99.9 % / max = 0.0001 / 0.088 / 0.34 / 0.50 / 0.87 nats (99 % at S/N < 3:
# 0.41; at S/N ≥ 3: 0.20). 0.5 is the 99.9th percentile: one in-distribution spectrum in a
# thousand is flagged. Re-measure when a new model version is served.
OOD_EPISTEMIC = 0.5
# Fallback no-signal test for models without ``z_warning``: the significance, in σ, of the
# spectrum's χ² against zero flux over its good grid pixels, (Σ (flux/σ)² − n) / √(2n). Pure
# noise with honest errors scatters around 0 with unit spread; any continuum or line adds.
NO_SIGNAL_SIGMA = 5.0

_Z_AMBIGUOUS = next(b for b, n in Z_WARNING_BITS.items() if n == "z_ambiguous")
_Z_NO_SIGNAL = next(b for b, n in Z_WARNING_BITS.items() if n == "z_no_signal")


@dataclass(frozen=True, slots=True)
class Flag:
    bit: int
    name: str
    meaning: str


LOW_SNR_FLAG = Flag(1, "low_snr", f"median S/N per model-grid pixel below {LOW_SNR}")
LITTLE_COVERAGE = Flag(2, "little_coverage",
                       f"the spectrum covers less than {WARN_COVERAGE:.0%} of the model grid")
MOSTLY_MASKED = Flag(4, "mostly_masked",
                     f"more than {WARN_MASKED_FRACTION:.0%} of the model grid has no good data")
OUT_OF_DISTRIBUTION = Flag(8, "out_of_distribution",
                           f"epistemic uncertainty above {OOD_EPISTEMIC} nats: unlike the "
                           "training spectra")
Z_MULTIMODAL = Flag(16, "z_multimodal", "the redshift fit has a second, separate minimum "
                    "(the model's z_warning z_ambiguous)")
NO_SIGNAL = Flag(32, "no_signal", "no signal above the noise: a sky fibre or an empty "
                 "spectrum (z_warning z_no_signal, else the input's χ² against zero flux)")
FLAGS: tuple[Flag, ...] = (LOW_SNR_FLAG, LITTLE_COVERAGE, MOSTLY_MASKED, OUT_OF_DISTRIBUTION,
                           Z_MULTIMODAL, NO_SIGNAL)
# "1 low_snr, 2 little_coverage, ...": for the column and field descriptions
BITS_TEXT = ", ".join(f"{f.bit} {f.name}" for f in FLAGS)


def quality_names(bits: int) -> list[str]:
    """The names of the set bits, in bit order."""
    return [f.name for f in FLAGS if bits & f.bit]


def snr_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of model inputs ``(N, 2, npix)``: (median S/N per good grid pixel, signal
    significance in σ), both from the input alone.

    Channel 1 is w = ivar·s²/(1 + ivar·s²), so ivar·s² = w/(1 − w), and channel 0 is flux/s:
    their product flux·√ivar is each pixel's S/N, whatever the scale s (SDSS's SN_MEDIAN
    convention, signed: noise has median 0). Pixels with w = 0 are masked or uncovered.
    Vectorised with one sort per block rather than ``np.nanmedian`` (a Python loop per row).
    """
    w = x[:, 1].astype(np.float64)
    good = w > 0
    # w rounds to 1 in float32 above ivar·s² ≈ 1e7; the S/N there is huge whatever the cap
    snr = np.sqrt(w / np.maximum(1.0 - w, 1e-12))
    snr *= x[:, 0]  # exactly 0 where masked: both channels are 0 there
    n = np.count_nonzero(good, axis=1)
    chi2 = np.einsum("ij,ij->i", snr, snr)
    snr[~good] = np.nan  # NaN sorts last: a row's good values come first
    snr.sort(axis=1)
    # the middle pair (one value twice when n is odd); a row with no good pixel gets 0
    rows = np.arange(x.shape[0])
    lo = snr[rows, np.maximum((n - 1) // 2, 0)]
    hi = snr[rows, n // 2]
    median = np.where(n > 0, (lo + hi) / 2.0, 0.0)
    significance = np.where(n > 0, (chi2 - n) / np.sqrt(2.0 * np.maximum(n, 1)), 0.0)
    return median, significance


def quality(prepared: Sequence[Prepared], outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The quality bits (int64, one per row) of the spectra in ``prepared``, whose model
    outputs are the rows of ``outputs`` in the same order."""
    n = len(prepared)
    bits = np.zeros(n, dtype=np.int64)
    if n == 0:
        return bits
    median, significance = snr_statistics(np.stack([p.x for p in prepared]))
    bits |= np.where(median < LOW_SNR, LOW_SNR_FLAG.bit, 0)
    bits |= np.where([p.coverage < WARN_COVERAGE for p in prepared], LITTLE_COVERAGE.bit, 0)
    bits |= np.where([p.masked_fraction > WARN_MASKED_FRACTION for p in prepared],
                     MOSTLY_MASKED.bit, 0)
    if "epistemic" in outputs:
        bits |= np.where(outputs["epistemic"].reshape(-1) > OOD_EPISTEMIC,
                         OUT_OF_DISTRIBUTION.bit, 0)
    if "z_warning" in outputs:
        zw = outputs["z_warning"].reshape(-1).astype(np.int64)
        bits |= np.where(zw & _Z_AMBIGUOUS, Z_MULTIMODAL.bit, 0)
        bits |= np.where(zw & _Z_NO_SIGNAL, NO_SIGNAL.bit, 0)
    else:
        bits |= np.where(significance < NO_SIGNAL_SIGMA, NO_SIGNAL.bit, 0)
    return bits
