"""The reference preprocessing: resample_to_grid and normalise exactly as first committed (c9aeef8).

Kept verbatim so that tests can hold the optimised implementation in preprocess.py to the
numbers a model was trained on (PREPROCESS_VERSION "1"). Do not edit: it is the contract.
"""

from __future__ import annotations

import math

import numpy as np

from service.spectra.errors import SpectrumError
from service.spectra.preprocess import (
    CLIP,
    MIN_GOOD_FRACTION,
    LogLambdaGrid,
    Resampled,
    pixel_edges,
)
from service.spectra.spectrum import Spectrum


def reference_resample(spectrum: Spectrum, grid: LogLambdaGrid) -> Resampled:
    """Flux-conserving resampling that propagates inverse variance and the mask.

    Each output pixel gets the mean flux density of the *good* input over its width, and the
    variance of that weighted mean (Σ wᵢ² σᵢ²)/(Σ wᵢ)², wᵢ the overlaps. Output pixels with less
    than MIN_GOOD_FRACTION of their width covered by good input are masked, never invented.
    Vectorised with cumulative sums and one ``searchsorted``: O(n + npix), no Python loop.
    Why not specutils' FluxConservingResampler: it loops per output pixel in Python (~100×
    slower at 4k pixels) and carries Quantity overhead on the hot path.
    """
    if spectrum.npix < 2:
        raise SpectrumError("empty_spectrum", "need at least 2 pixels to resample",
                            source=spectrum.meta.get("source"))
    e_in = pixel_edges(spectrum.wavelength)
    n = e_in.shape[0] - 1
    width = np.diff(e_in)
    good = (~spectrum.mask).astype(np.float64)
    var = np.divide(1.0, spectrum.ivar, out=np.zeros_like(spectrum.ivar),
                    where=spectrum.ivar > 0)
    vg = var * good
    fg = spectrum.flux * good
    zero = np.zeros(1)
    cum_g = np.concatenate((zero, np.cumsum(good * width)))
    cum_f = np.concatenate((zero, np.cumsum(fg * width)))
    cum_v = np.concatenate((zero, np.cumsum(vg * width * width)))

    # x: output edges clipped to the input range; k: the input bin holding each.
    x = np.minimum(np.maximum(grid.edges, e_in[0]), e_in[-1])
    k = np.searchsorted(e_in, x, side="right") - 1
    np.minimum(k, n - 1, out=k)
    dx = x - e_in[k]
    w_good = np.diff(cum_g[k] + good[k] * dx)
    f_sum = np.diff(cum_f[k] + fg[k] * dx)

    # Σ var·overlap² per output bin [a, b]: the partial end bins explicitly, the fully covered
    # middle bins from the cumulative sum (variance is not linear in the overlap).
    a, b = x[:-1], x[1:]
    ka, kb = k[:-1], k[1:]
    same = ka >= kb
    ka1 = np.minimum(ka + 1, n)
    left = np.where(same, b - a, e_in[ka1] - a)
    right = np.where(same, 0.0, b - e_in[kb])
    middle = np.where(same, 0.0, cum_v[kb] - cum_v[ka1])
    v_sum = vg[ka] * left * left + vg[kb] * right * right + np.maximum(middle, 0.0)

    e_out = grid.edges
    covered = (e_out[1:] > e_in[0]) & (e_out[:-1] < e_in[-1])
    use = covered & (w_good >= MIN_GOOD_FRACTION * np.diff(e_out)) & (v_sum > 0)
    flux = np.zeros(grid.npix)
    ivar = np.zeros(grid.npix)
    flux[use] = f_sum[use] / w_good[use]
    ivar[use] = w_good[use] ** 2 / v_sum[use]
    return Resampled(flux=flux, ivar=ivar, mask=~use, coverage=float(covered.mean()))


def reference_normalise(resampled: Resampled) -> np.ndarray:
    """The two-channel model input from a resampled spectrum (see module docstring)."""
    good = ~resampled.mask
    x = np.zeros((2, resampled.flux.shape[0]), dtype=np.float32)
    if not good.any():
        return x
    f = resampled.flux[good]
    scale = float(np.median(np.abs(f)))
    if not (scale > 0 and math.isfinite(scale)):
        scale = float(np.mean(np.abs(f)))
    if not (scale > 0 and math.isfinite(scale)):
        scale = 1.0
    x[0, good] = np.clip(f / scale, -CLIP, CLIP)
    snr2 = resampled.ivar[good] * scale * scale
    x[1, good] = snr2 / (1.0 + snr2)
    return x

