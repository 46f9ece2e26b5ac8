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


@nb.njit(**_JIT)
def _vec_log64(x, out):
    for k in range(x.size):
        out[k] = log64(x[k])


def elementwise(name: str, x: np.ndarray) -> np.ndarray:
    """exp, tanh or (float64) log of a 1-D array by the kernels' own functions (for tests)."""
    out = np.empty_like(x)
    fn = {
        ("log", np.float64): _vec_log64,
        ("exp", np.float64): _vec_exp64,
        ("tanh", np.float64): _vec_tanh64,
        ("exp", np.float32): _vec_exp32,
        ("tanh", np.float32): _vec_tanh32,
    }[(name, x.dtype.type)]
    fn(x, out)
    return out


# ------------------------------------------------------------- diagnostics in one pass
#
# The streaming statistics of core/diagnostics.py, each a single compiled pass over the
# engine's arrays (selected with the fast engine: diagnostics.FUSED). Sums are float64;
# `reassoc` lets LLVM vectorise them (it changes only the order of the additions), and
# nothing assumes finite values: NaN propagates exactly as in the NumPy passes.

_RJIT = dict(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})


@intrinsic
def _bits_f64(typingctx, x):
    """The int64 bit pattern of the float64 x."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


_SQRT2 = 1.4142135623730951


@nb.njit(**dict(_JIT, fastmath={"contract"}))
def log64(x):
    """ln x for float64 x, branch-free enough to vectorise: x = m 2^e with m in
    [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m - 1)/(m + 1), |s| < 0.1716, by its
    series to s^23 (truncation < 1e-19 relative). ln 0 = -inf, NaN stays NaN. Compiled with
    `contract` (fused multiply-adds where the machine has them: its Horner steps ~20 %
    faster; within 2 ulp with or without, tests/test_fused.py)."""
    sub = x < 2.2250738585072014e-308  # subnormal (or 0): scale into the normal range
    y = x * 18014398509481984.0 if sub else x  # 2^54
    bits = _bits_f64(y)
    e = ((bits >> 52) & 0x7FF) - 1023
    m = _f64_bits((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000)  # [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    e = e - 54 if sub else e
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = 2.0 / 23.0
    p = p * s2 + 2.0 / 21.0
    p = p * s2 + 2.0 / 19.0
    p = p * s2 + 2.0 / 17.0
    p = p * s2 + 2.0 / 15.0
    p = p * s2 + 2.0 / 13.0
    p = p * s2 + 2.0 / 11.0
    p = p * s2 + 2.0 / 9.0
    p = p * s2 + 2.0 / 7.0
    p = p * s2 + 2.0 / 5.0
    p = p * s2 + 2.0 / 3.0
    ef = np.float64(e)
    r = ef * _LN2_HI + ((s * s2) * p + (ef * _LN2_LO + 2.0 * s))
    if x == 0.0:
        r = -np.inf
    if x != x or x == np.inf:
        r = x
    return r


@nb.njit(**_RJIT)
def _add_row_sums(row, s):
    """Per gate, the sum of one row (4H,) [i | f | g | o] of a chunk, added to s (4,)."""
    H = row.shape[0] // 4
    for g in range(4):
        blk = row[g * H : (g + 1) * H]
        acc = 0.0
        for j in range(H):
            acc += np.float64(blk[j])
        s[g] += acc


@nb.njit(**_RJIT)
def _merge_moments(a, r0, r1, state, s):
    """Rows r0..r1 of a (N, 4H), a chunk whose per-gate sums s (4,) were taken (`_add_row_sums`,
    row by row): its sum of squared deviations from the chunk's mean (a second pass over the
    cached chunk), merged into state = [n, mean(4), m2(4), ...] by Chan et al.'s update."""
    H = a.shape[1] // 4
    cnt = (r1 - r0) * H
    for g in range(4):
        mean_c = s[g] / cnt
        m2_c = 0.0
        for r in range(r0, r1):
            blk = a[r, g * H : (g + 1) * H]
            acc = 0.0
            for j in range(H):
                d = np.float64(blk[j]) - mean_c
                acc += d * d
            m2_c += acc
        n = state[0]
        if n == 0.0:
            state[1 + g], state[5 + g] = mean_c, m2_c
        else:  # merge two (count, mean, M2) summaries
            tot = n + cnt
            delta = mean_c - state[1 + g]
            state[1 + g] = state[1 + g] + delta * cnt / tot
            state[5 + g] = state[5 + g] + m2_c + delta * delta * n * cnt / tot
    state[0] += cnt


@nb.njit(**_RJIT)
def _saturation(row, lo, hi, low_u, high_u, step_u):
    """One row's 0/1 saturation indicators, added per column to low_u, high_u (int32, one
    chunk's) and their sum to step_u (int32, the current step's; summed per gate once a step)."""
    for j in range(row.shape[0]):
        below = np.int32(row[j] < lo[j])
        above = np.int32(row[j] > hi[j])
        low_u[j] += below
        high_u[j] += above
        step_u[j] += below + above


@nb.njit(**_RJIT)
def _forget_bins(f, hist, edges64, idx):
    """Histogram of one row of f (50 bins of [0, 1], `unit_interval_bincount`'s bins; edges64:
    correct the floor next to an edge, for float64 f); NaN left out as np.histogram does.
    idx: int32 scratch of f's length (the bins are found in a vectorised loop, then counted)."""
    nbins = hist.shape[0]
    step = 1.0 / nbins
    for j in range(f.shape[0]):
        v = np.float64(f[j])
        v = v if v == v else -1.0  # NaN: bin -50 (int32 truncation is the floor for v >= 0)
        idx[j] = min(np.int32(v * nbins), np.int32(nbins - 1))
    if edges64:  # compare with fl(k * step) as np.histogram compares with its edges
        for j in range(f.shape[0]):
            v, b = np.float64(f[j]), idx[j]
            if b >= 0:
                if v < b * step:
                    idx[j] = b - 1
                elif b + 1 < nbins and v >= (b + 1) * step:
                    idx[j] = b + 1
    for j in range(f.shape[0]):
        if idx[j] >= 0:
            hist[idx[j]] += 1


@nb.njit(**_RJIT)
def _log_forget(f, f2, unit):
    """Sum of ln(f f2) over rows f, f2 (H,) of the forget gate: added per unit to unit (H,), the
    total returned; by the kernels' own log (`log64`, <= 2 ulp; the NumPy pass uses the C
    library's). f2 is the next row (float32 rows: one log for two entries) or ones (ln f
    alone: f times 1 is f, exactly). The product of two float32 numbers is exact in float64
    (48 significant bits; 2^-298 and 1 bound it away from underflow and overflow), so its ln
    is ln f + ln f2 to the same 2 ulp. NaN propagates; 0 gives -inf, as each entry's log would."""
    acc = 0.0
    for j in range(unit.shape[0]):
        v = log64(np.float64(f[j]) * np.float64(f2[j]))
        unit[j] += v
        acc += v
    return acc


@nb.njit(**_RJIT)
def gate_pass(a, B, lo, hi, rows_per_chunk, edges64, state, low_u, high_u, sat_steps, hist, log_u, step_sum):
    """`GateAccumulator.add` on a (N, 4H) [i | f | g | o] rows, B consecutive rows a step, a chunk
    of rows at a time: the per-gate moments merged into state = [n, mean(4), m2(4), sum ln f];
    0/1 saturation counts per column (low_u, high_u (4H,)) and per step and gate (sat_steps
    (N / B, 4)); the forget histogram (hist, edges64: float64 a); ln f by `_log_forget`, added
    to the total (state[9]) and to log_u (H,), the per-unit sums (a chunk's sum at a time), for
    float32 a one log per two rows of a chunk (its rows 0 and 1, 2 and 3, ...; an odd last row
    alone); step_sum (N / B, 4H) in a's dtype, unless it has no rows: the sum over each step's
    B rows, added in order (as NumPy's mean over the batch). Everything but the moments' second
    pass is taken in one pass over each row."""
    N, H4 = a.shape
    H = H4 // 4
    s = np.zeros(4)
    unit = np.empty(H)  # one chunk's per-unit sums of ln f
    low32, high32 = np.empty(H4, np.int32), np.empty(H4, np.int32)  # one chunk's counts
    step32 = np.zeros(H4, np.int32)  # the current step's low + high counts per column
    idx = np.empty(H, np.int32)
    ones = np.ones(H, a.dtype)  # the second row of a log of one row alone (`_log_forget`)
    means = step_sum.shape[0] > 0
    for r0 in range(0, N, rows_per_chunk):
        r1 = min(N, r0 + rows_per_chunk)
        s[:] = 0.0
        unit[:] = 0.0
        low32[:] = 0
        high32[:] = 0
        log_total = 0.0
        for r in range(r0, r1):
            row = a[r]
            _add_row_sums(row, s)
            if means:
                out = step_sum[r // B]
                if r % B == 0:
                    out[:] = row
                else:
                    for j in range(H4):
                        out[j] += row[j]
            _saturation(row, lo, hi, low32, high32, step32)
            if r % B == B - 1:  # the step's last row: its counts per gate
                for g in range(4):
                    k = 0
                    for j in range(g * H, (g + 1) * H):
                        k += step32[j]
                    sat_steps[r // B, g] = k
                step32[:] = 0
            _forget_bins(row[H : 2 * H], hist, edges64, idx)
            if edges64:
                log_total += _log_forget(row[H : 2 * H], ones, unit)
            elif (r - r0) % 2:  # the second row of a pair
                log_total += _log_forget(a[r - 1, H : 2 * H], row[H : 2 * H], unit)
            elif r == r1 - 1:  # an odd row left at the chunk's end
                log_total += _log_forget(row[H : 2 * H], ones, unit)
        _merge_moments(a, r0, r1, state, s)
        state[9] += log_total
        for j in range(H4):
            low_u[j] += low32[j]
            high_u[j] += high32[j]
        for j in range(H):
            log_u[j] += unit[j]


@nb.njit(**_RJIT)
def sum_squares(a, out):
    """out[r] = sum_j a[r, j]^2 in float64, a (N, m)."""
    N, m = a.shape
    for r in range(N):
        row = a[r]
        acc = 0.0
        for j in range(m):
            v = np.float64(row[j])
            acc += v * v
        out[r] = acc


@nb.njit(**_RJIT)
def state_pass(c, h, tanh_c, level, abs_c, h_finite):
    """Per step t of c, h, tanh_c (T, n): abs_c[t] = max |c_t| (NaN if any entry is NaN),
    h_finite[t] = every h_t finite; returns how many |tanh c| > level."""
    T, n = c.shape
    count = 0
    for t in range(T):
        ct, ht, tt = c[t], h[t], tanh_c[t]
        m = 0.0
        nan = False
        for j in range(n):
            v = abs(np.float64(ct[j]))
            nan |= v != v
            m = max(m, v)
        abs_c[t] = np.nan if nan else m
        ok = True
        for j in range(n):
            v = np.float64(ht[j])
            ok &= abs(v) < np.inf  # False for NaN and inf
        h_finite[t] = ok
        k = 0
        for j in range(n):
            k += abs(tt[j]) > level
        count += k
    return count


DIAGNOSTICS = (gate_pass, sum_squares, state_pass)  # the passes above, compiled per dtype by `warm_up`
