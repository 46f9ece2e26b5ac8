"""Numba kernels for one LSTM step's element-wise work (optional extra `fast`).

Imported only by `core.fused`, and only when the fused engine is selected: numba is
never imported for `--help` or with `--engine numpy`.

What makes them fast (docs/performance.md, "Fused kernels"):
- exp and expm1 are our own, branch-free and vectorisable (numba's `math.exp` is a
  scalar library call on machines without Intel's SVML): Cody-Waite range reduction
  x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial for expm1(r), and 2^n built from its
  bits (split in two factors so that gradual underflow and overflow come out right);
  tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)) with the sign of x, accurate near 0.
  Float64 error about 1-2 ulp, float32 within 2 ulp (its polynomial in float32).
- the inner loops run over one gate's row of one sample (1-D contiguous views):
  2-D indexing like a[b, H + j] keeps LLVM from vectorising.
- error_model="numpy" (no ZeroDivisionError checks), no fastmath (so no reassociation
  or FMA contraction: the arithmetic is the NumPy engine's, operation for operation),
  no prange (OpenMP threads would fight the BLAS threads of the GEMMs in between).

Equation numbers are docs/equations.md's.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

_JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=False)


@intrinsic
def _f64_bits(typingctx, n):
    """The float64 whose bit pattern is the int64 n."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@intrinsic
def _f32_bits(typingctx, n):
    """The float32 whose bit pattern is the int32 n."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


# ------------------------------------------------------------------ float64 exp, tanh

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts: n * _LN2_HI is exact for |n| < 2^11
_LN2_LO = 1.90821492927058770002e-10


@nb.njit(**_JIT)
def _expm1_parts64(x):
    """(2^n as two factors s1, s2, p) with e^x = s1 s2 (1 + p), p = expm1(r)."""
    x = 710.0 if x > 710.0 else x  # NaN passes both tests unchanged
    x = -746.0 if x < -746.0 else x
    nf = np.floor(x * _LOG2E + 0.5)
    r = (x - nf * _LN2_HI) - nf * _LN2_LO  # |r| <= ln2/2 (+ rounding)
    # expm1(r) = r + r^2/2! + ... + r^13/13!  (truncation < 2e-17 relative)
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = (p * r) * r + r
    n = np.int64(nf)
    n1 = n >> 1
    s1 = _f64_bits((n1 + 1023) << 52)
    s2 = _f64_bits((n - n1 + 1023) << 52)
    return s1, s2, p


@nb.njit(**_JIT)
def exp64(x):
    s1, s2, p = _expm1_parts64(x)
    return (p * s1 + s1) * s2


@nb.njit(**_JIT)
def tanh64(x):
    """tanh via expm1(-2|x|) = s (1 + p) - 1 with s = 2^n <= 1."""
    s1, s2, p = _expm1_parts64(-2.0 * abs(x))
    s = s1 * s2
    u = p * s + (s - 1.0)  # expm1(-2|x|), in (-1, 0]
    return np.copysign(-u / (2.0 + u), x)


# ------------------------------------------------------------------ float32 exp, tanh

_LOG2E_F = np.float32(1.442695)
_LN2_HI_F = np.float32(0.693359375)  # 8 significant bits: n * _LN2_HI_F exact
_LN2_LO_F = np.float32(-2.12194440e-4)
_F32 = np.float32


@nb.njit(**_JIT)
def _expm1_parts32(x):
    x = _F32(89.0) if x > _F32(89.0) else x
    x = _F32(-104.0) if x < _F32(-104.0) else x
    nf = np.floor(x * _LOG2E_F + _F32(0.5))
    r = (x - nf * _LN2_HI_F) - nf * _LN2_LO_F
    p = _F32(1.0 / 40320.0)
    p = p * r + _F32(1.0 / 5040.0)
    p = p * r + _F32(1.0 / 720.0)
    p = p * r + _F32(1.0 / 120.0)
    p = p * r + _F32(1.0 / 24.0)
    p = p * r + _F32(1.0 / 6.0)
    p = p * r + _F32(0.5)
    p = (p * r) * r + r
    n = np.int32(nf)
    n1 = n >> 1
    s1 = _f32_bits((n1 + np.int32(127)) << np.int32(23))
    s2 = _f32_bits((n - n1 + np.int32(127)) << np.int32(23))
    return s1, s2, p


@nb.njit(**_JIT)
def exp32(x):
    s1, s2, p = _expm1_parts32(x)
    return (p * s1 + s1) * s2


@nb.njit(**_JIT)
def tanh32(x):
    s1, s2, p = _expm1_parts32(_F32(-2.0) * abs(x))
    s = s1 * s2
    u = p * s + (s - _F32(1.0))
    return np.copysign(-u / (_F32(2.0) + u), x)


# ------------------------------------------------------------------------ step kernels


def _exp(x):
    """e^x by exp64 or exp32, whichever matches x's type (resolved at compile time)."""


def _tanh(x):
    """tanh x by tanh64 or tanh32."""


@overload(_exp, jit_options=_JIT)
def _exp_impl(x):
    return (lambda x: exp32(x)) if x == types.float32 else (lambda x: exp64(x))


@overload(_tanh, jit_options=_JIT)
def _tanh_impl(x):
    return (lambda x: tanh32(x)) if x == types.float32 else (lambda x: tanh64(x))


@nb.njit(**_JIT)
def forward_step(gates, rec, c, h, tanh_c, t):
    """Step t of eqs. (1)-(7). gates[t] (B, 4H) holds a = -(W_ih x_t + b) on entry and
    [i | f | g | o] on exit; rec (B, 4H) = -W_hh h_{t-1}; writes c[t+1], h[t+1], tanh_c[t]."""
    B = gates.shape[1]
    H = c.shape[2]
    one = gates.dtype.type(1.0)
    for b in range(B):
        row, r = gates[t, b], rec[b]
        ai, af, ag, ao = row[:H], row[H : 2 * H], row[2 * H : 3 * H], row[3 * H :]
        ri, rf, rg, ro = r[:H], r[H : 2 * H], r[2 * H : 3 * H], r[3 * H :]
        cp, cn, hn, tc = c[t, b], c[t + 1, b], h[t + 1, b], tanh_c[t, b]
        for j in range(H):
            i = one / (one + _exp(ai[j] + ri[j]))  # eq. (2): σ(z) = 1 / (1 + e^-z), a = -z
            f = one / (one + _exp(af[j] + rf[j]))  # eq. (3)
            g = _tanh(-(ag[j] + rg[j]))  # eq. (4)
            o = one / (one + _exp(ao[j] + ro[j]))  # eq. (5)
            cj = f * cp[j] + i * g  # eq. (6)
            tcj = _tanh(cj)
            ai[j], af[j], ag[j], ao[j] = i, f, g, o
            cn[j] = cj
            tc[j] = tcj
            hn[j] = o * tcj  # eq. (7)


@nb.njit(**_JIT)
def backward_step(gates, c, tanh_c, dh, carry, dc, dz, t):
    """Step t of eqs. (9)-(13) given δh_t in dh[t] (direct term already added) and the
    carry δc_{t+1} ⊙ f_{t+1}: writes dc[t], dz[t] and the new carry δc_t ⊙ f_t."""
    B = gates.shape[1]
    H = c.shape[2]
    one = gates.dtype.type(1.0)
    for b in range(B):
        row, d = gates[t, b], dz[t, b]
        gi, gf, gg, go = row[:H], row[H : 2 * H], row[2 * H : 3 * H], row[3 * H :]
        di, df, dg, do = d[:H], d[H : 2 * H], d[2 * H : 3 * H], d[3 * H :]
        cp, tc, dht, dct, cr = c[t, b], tanh_c[t, b], dh[t, b], dc[t, b], carry[b]
        for j in range(H):
            i, f, g, o, tcj, dhj = gi[j], gf[j], gg[j], go[j], tc[j], dht[j]
            dcj = dhj * ((one - tcj * tcj) * o) + cr[j]  # eq. (9)
            di[j] = (((one - i) * i) * g) * dcj  # eq. (10)
            df[j] = (((one - f) * f) * cp[j]) * dcj  # eq. (11)
            dg[j] = ((one - g * g) * i) * dcj  # eq. (12)
            do[j] = (((one - o) * o) * tcj) * dhj  # eq. (13)
            dct[j] = dcj
            cr[j] = dcj * f


# (forward, backward) step kernels per dtype; numba compiles one specialization of each
KERNELS = {np.dtype(dt): (forward_step, backward_step) for dt in (np.float64, np.float32)}


@nb.njit(**_JIT)
def _vec_exp64(x, out):
    for k in range(x.size):
        out[k] = exp64(x[k])


@nb.njit(**_JIT)
def _vec_tanh64(x, out):
    for k in range(x.size):
        out[k] = tanh64(x[k])


@nb.njit(**_JIT)
def _vec_exp32(x, out):
    for k in range(x.size):
        out[k] = exp32(x[k])


@nb.njit(**_JIT)
def _vec_tanh32(x, out):
    for k in range(x.size):
        out[k] = tanh32(x[k])


def elementwise(name: str, x: np.ndarray) -> np.ndarray:
    """exp or tanh of a 1-D array by the kernels' own functions (for tests and benchmarks)."""
    out = np.empty_like(x)
    fn = {
        ("exp", np.float64): _vec_exp64,
        ("tanh", np.float64): _vec_tanh64,
        ("exp", np.float32): _vec_exp32,
        ("tanh", np.float32): _vec_tanh32,
    }[(name, x.dtype.type)]
    fn(x, out)
    return out
