"""Branch-free masking for the per-pixel hot paths.

Why not ``np.where`` / ``where=`` / boolean assignment: with a fibre's random bad-pixel mask
those loops mispredict a branch per pixel, and on the bench machine they ran 3-5x slower than
plain arithmetic (bench/bench_preprocess.py). Clearing a value's bits with an AND is exact
(IEEE +0.0 is all zero bits, whatever the value was, NaN and inf included) and is one pass.
"""

from __future__ import annotations

import numpy as np

_UINT = {4: np.uint32, 8: np.uint64}


def zero_where_not(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values`` with +0.0 wherever ``keep`` (broadcastable bool) is False, in place.

    Bit for bit what ``np.where(keep, values, 0.0)`` gives, without its branch per element.
    """
    bits = values.view(_UINT[values.dtype.itemsize])
    ones = np.negative(keep.astype(bits.dtype))  # True → all ones, False → 0
    np.bitwise_and(bits, ones, out=bits)
    return values
