"""The subnormal guard's size check as one compiled pass, for the fused engine (core/fused.py).

`engine._Guard.enter` needs, before every step while the state is scaled, the largest
magnitude in the state (δh_t and δc_{t+1} ⊙ f_{t+1}) as the NumPy engine computes it:
    m = max(carry.max(), -carry.min(), dh_t.max(), -dh_t.min())      (Python's max)
that is max |x| over both arrays; NaN if carry holds a NaN (NumPy's max and min propagate
it, and Python's max keeps a NaN that comes first); a NaN in dh_t alone is passed over
(NaN > x is false), leaving max |carry|. Four NumPy reductions and Python's max took
about 8 µs a step at B = 8, H = 128, this pass under 2 µs (docs/subnormal-guard.md).

Here the same value comes from one pass of integer maxima: for floats that are not NaN,
|x| orders as the integer of x's bits without the sign bit, and a NaN is exactly a bit
pattern above inf's. Integer maxima vectorise (float maxima with NaN rules do not).
Imports numba: loaded only with the fused engine. Pure computation.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=False)


@nb.njit(**_JIT)
def _max_magnitude_bits(u, mask):
    """max over u of (u & mask): the largest |x| as bits, above inf's bits if a NaN is in."""
    m = u[0] & mask
    for j in range(1, u.size):
        v = u[j] & mask
        m = v if v > m else m
    return m


@nb.njit(**_JIT)
def _peak32(carry, dh):
    mask, inf = np.uint32(0x7FFFFFFF), np.uint32(0x7F800000)
    mc = _max_magnitude_bits(carry.ravel().view(np.uint32), mask)
    md = _max_magnitude_bits(dh.ravel().view(np.uint32), mask)
    if mc > inf:  # carry holds a NaN: NumPy's max is NaN and Python's max keeps it
        return np.nan
    m = md if md > mc and md <= inf else mc  # a NaN in dh alone is passed over
    return np.float64(np.array([m], np.uint32).view(np.float32)[0])


@nb.njit(**_JIT)
def _peak64(carry, dh):
    mask, inf = np.uint64(0x7FFFFFFFFFFFFFFF), np.uint64(0x7FF0000000000000)
    mc = _max_magnitude_bits(carry.ravel().view(np.uint64), mask)
    md = _max_magnitude_bits(dh.ravel().view(np.uint64), mask)
    if mc > inf:
        return np.nan
    m = md if md > mc and md <= inf else mc
    return np.array([m], np.uint64).view(np.float64)[0]


# PEAK[dtype](carry, dh): max(carry.max(), -carry.min(), dh.max(), -dh.min()) exactly (NaN rules
# above), as a float64; carry and dh C-contiguous of that dtype, neither empty.
PEAK = {np.dtype(np.float32): _peak32, np.dtype(np.float64): _peak64}
KERNELS = (_max_magnitude_bits, _peak32, _peak64)

