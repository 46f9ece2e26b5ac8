"""The subnormal guard's scaling by powers of two (core/engine.py `scale_pow2`) is bitwise
`np.ldexp`: every float bit pattern (normal, subnormal, zero of either sign, inf, NaN) times
2^k for k on both sides of every edge of the exponent range, where one product rounds into
the subnormal range, where 2^k is not a float of the dtype, and where the result overflows.
Without these, a changed bit in a vanished gradient would go unnoticed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_diag.core import engine
from lstm_diag.core.engine import scale_pow2

DTYPES = {np.float32: np.uint32, np.float64: np.uint64}


def _limits(dt):
    fi = np.finfo(dt)
    return int(fi.minexp) - int(fi.nmant), int(fi.maxexp) - 1  # float32: -149, 127


def _edge_exponents(dt) -> list[int]:
    """k around each edge: 2^k subnormal, below the smallest subnormal, the clamp, overflow."""
    lo, hi = _limits(dt)
    ks = set(range(-70, 71, 3)) | set(range(lo - 60, lo + 60)) | set(range(lo - hi - 8, lo - hi + 8))
    ks |= set(range(hi - 8, hi + 8)) | set(range(hi - lo - 8, hi - lo + 8))
    ks |= set(range(2 * hi - 4, 2 * hi + 4))
    return sorted(ks | {2 * (lo - hi), 3 * hi, -(10**6), 10**6})


def _edge_values(dt) -> np.ndarray:
    """±m 2^e for every exponent e from below the smallest subnormal to the largest, with
    significands at rounding ties (1.5, 1.25), just above/below them, and the extremes."""
    fi = np.finfo(dt)
    eps = float(fi.eps)
    lo, hi = _limits(dt)
    ms = np.array([1.0, 1.25, 1.5, 1.75, 1 + eps, 2 - eps, 1.5 + eps, 1.5 - eps, 1.25 + eps], dt)
    v = np.ldexp(ms[None, :], np.arange(lo - 1, hi + 1)[:, None]).ravel()
    sub = fi.smallest_subnormal
    special = np.array([0.0, np.inf, np.nan, fi.tiny, fi.max, sub, 3 * sub], dt)
    return np.concatenate([v, special, -v, -special])


def _same_bits(got: np.ndarray, ref: np.ndarray, it) -> np.ndarray:
    """Where the results differ: bit patterns compared, NaN against NaN by payload too."""
    return got.view(it) != ref.view(it)


@pytest.mark.parametrize("dt", list(DTYPES))
def test_scale_pow2_is_ldexp_on_every_exponent_edge(dt):
    it = DTYPES[dt]
    a = _edge_values(dt)
    rng = np.random.default_rng(0)
    bits = rng.integers(0, np.iinfo(it).max, size=20_000, dtype=it, endpoint=True)
    a = np.concatenate([a, bits.view(dt)])  # every kind of bit pattern, NaN payloads included
    with np.errstate(all="ignore"):
        for k in _edge_exponents(dt):
            ref = np.ldexp(a, k)
            got = scale_pow2(a, k)
            bad = _same_bits(got, ref, it)
            assert not bad.any(), f"k={k}: {a[bad][:3]} -> {got[bad][:3]}, ldexp {ref[bad][:3]}"
            out = a.copy()
            scale_pow2(out, k, out)  # in place, as the guard uses it
            assert not _same_bits(out, ref, it).any(), k


# The edge test above runs 20,000 random bit patterns through every edge exponent: hypothesis
# adds exploration and shrinking, at ~5 ms an example (the 20,000 examples per dtype of the
# helper's hand run found nothing the edges missed).
@pytest.mark.parametrize("dt", list(DTYPES))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_scale_pow2_is_ldexp_on_any_bits(dt, data):
    it = DTYPES[dt]
    nbits = 8 * np.dtype(dt).itemsize
    lo, hi = _limits(dt)
    words = data.draw(st.lists(st.integers(0, 2**nbits - 1), min_size=1, max_size=16))
    k = data.draw(st.integers(2 * (lo - hi) - 10, 2 * (hi - lo) + 10))
    a = np.array(words, it).view(dt)
    with np.errstate(all="ignore"):
        ref = np.ldexp(a, k)
        got = scale_pow2(a, k)
    assert not _same_bits(got, ref, it).any(), (a, k, got, ref)


def _numpy_peak(carry, dh):
    """The size check as engine._Guard.enter computed it on both engines before
    core/fused_guard.py (and as engine._peak computes it, by the same reductions)."""
    ref = max(carry.max(), -carry.min(), dh.max(), -dh.min())
    got = engine._peak(carry, dh)
    assert (np.isnan(ref) and np.isnan(got)) or ref == got
    return ref


def _check_peak(carry, dh):
    fused_guard = pytest.importorskip("lstm_diag.core.fused_guard", reason="the fast engine needs numba")
    ref = _numpy_peak(carry, dh)
    got = fused_guard.PEAK[carry.dtype](carry, dh)
    assert type(got) is float
    if np.isnan(ref):
        assert np.isnan(got), (carry, dh, got)
    else:
        assert got == ref, (carry, dh, got, ref)


@pytest.mark.parametrize("dt", list(DTYPES))
def test_compiled_peak_is_the_numpy_size_check_on_edges(dt):
    pytest.importorskip("numba", reason="the fast engine needs numba")
    v = _edge_values(dt)
    v = v[~np.isnan(v)]
    rng = np.random.default_rng(1)
    for _ in range(200):
        carry = rng.choice(v, size=(3, 5)).astype(dt)
        dh = rng.choice(v, size=(3, 5)).astype(dt)
        _check_peak(carry, dh)
        for a in (carry, dh):  # a NaN in either, and in both
            b = a.copy()
            b.flat[rng.integers(b.size)] = np.nan
            _check_peak(b, dh) if a is carry else _check_peak(carry, b)
        _check_peak(np.full((2, 2), np.nan, dt), np.full((2, 2), np.nan, dt))
    _check_peak(np.zeros((1, 1), dt), -np.zeros((1, 1), dt))


@pytest.mark.parametrize("dt", list(DTYPES))
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_compiled_peak_is_the_numpy_size_check_on_any_bits(dt, data):
    pytest.importorskip("numba", reason="the fast engine needs numba")
    it = DTYPES[dt]
    nbits = 8 * np.dtype(dt).itemsize
    n = data.draw(st.integers(1, 40))
    words = st.lists(st.integers(0, 2**nbits - 1), min_size=n, max_size=n)
    carry = np.array(data.draw(words), it).view(dt).reshape(1, n)
    dh = np.array(data.draw(words), it).view(dt).reshape(n, 1)
    _check_peak(carry, dh)
