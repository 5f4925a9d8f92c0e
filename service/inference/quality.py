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
from service.spectra.zwarning import Z_WARNING_BIT

# Median S/N per model-grid pixel below which a spectrum is flagged low_snr. The simulator
# draws S/N ≥ 1.0 per grid pixel (training/spectra/config.py snr_min: the model never saw fainter),
# so below 1.0 the classification is an extrapolation. Measured as Prepared.snr_median (service.spectra.preprocess.snr_statistics) on
# the first 1,000 simulated validation spectra (data/spectra-val-*/): measured/true S/N has
# median 1.09 (1–99 %: 0.45–1.78), and 1.5 % of them, all at the training floor, fall under.
LOW_SNR = 1.0
# Mutual information between label and ensemble member (the model's ``epistemic`` output, in
# nats) above which a spectrum is flagged out_of_distribution. Measured by running the shipped
# v3 network (models/spectrum_classifier/3/model.onnx, CPU; v4 and v5 serve the same network) on the ``x`` of the first 1,000
# simulated validation spectra (data/spectra-val-4fffdc05bbf2a76c/, 5 chunks): quantiles
# 50 / 90 / 99 / 99.9 % / max = 0.0001 / 0.088 / 0.34 / 0.50 / 0.87 nats (99 % at S/N < 3:
# 0.41; at S/N ≥ 3: 0.20). 0.5 is the 99.9th percentile: one in-distribution spectrum in a
# thousand is flagged. Re-measure when a new model version is served.
OOD_EPISTEMIC = 0.5
# Fallback no-signal test for models without ``z_warning``: the significance, in σ, of the
# spectrum's χ² against zero flux over its good grid pixels, (Σ (flux/σ)² − n) / √(2n). Pure
# noise with honest errors scatters around 0 with unit spread; any continuum or line adds.
NO_SIGNAL_SIGMA = 5.0

_Z_AMBIGUOUS = Z_WARNING_BIT["z_ambiguous"]
_Z_NO_SIGNAL = Z_WARNING_BIT["z_no_signal"]


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


def quality(prepared: Sequence[Prepared], outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The quality bits (int64, one per row) of the spectra in ``prepared``, whose model
    outputs are the rows of ``outputs`` in the same order."""
    n = len(prepared)
    bits = np.zeros(n, dtype=np.int64)
    if n == 0:
        return bits
    median = np.array([p.snr_median for p in prepared])
    significance = np.array([p.signal_sigma for p in prepared])
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
