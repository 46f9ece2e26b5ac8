"""Numba kernels for the dynamics section's step loops (optional extra `fast`).

Selected with the fast engine (core/backends.py sets `dynamics.FUSED` to this module);
core/dynamics.py's NumPy code stays the reference and the fallback. Importing this
module imports numba: nothing imports it for `--help` or with `--engine numpy`.

What they replace (docs/dynamics.md, "Cost"): at small shapes the Lyapunov sweep and the
Lanczos iterations of the per-step norms are hundreds of NumPy calls on arrays of a few
thousand numbers, each paying NumPy's fixed cost. Here each step (each Lanczos step) is
its GEMMs, still in BLAS through NumPy with the same operands, plus one kernel call for
all of its element-wise work.

Same numbers as the NumPy code:
- the element-wise arithmetic is the reference's, operation for operation and in its
  order (no fastmath: no FMA contraction, no reassociation), so the sweep's steps and the
  Lanczos iterations are bitwise equal given the same GEMM results;
- the Lanczos sums are NumPy's own pairwise summation (`_pairwise`, the algorithm of
  NumPy's `add.reduce` over a contiguous axis: 8 accumulators in blocks of at most 128,
  halves above), in the array's dtype, so alpha and beta are bitwise NumPy's too;
- the exceptions are float32 Jacobians' QR factorizations (`qr_frame`: Gram-Schmidt twice in
  float64, ~10x cheaper than NumPy's LAPACK call on these small stacks) and the top
  eigenvalue of their Lanczos tridiagonals (`top_eigenvalues`: bisection in float64): both
  agree with LAPACK to rounding, but not bit for bit; float64 Jacobians keep LAPACK's (NumPy's)
  for both, so their results are bitwise the NumPy code's (docs/dynamics.md, "Cost").

Equation numbers are docs/equations.md's.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=False)
# For the QR and the finite check only: their sums may be reordered (vectorised); the QR's result
# differs from LAPACK's in the last bits whatever the order, the check's is exact.
_RJIT = dict(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})

_TINY = np.finfo(np.float64).tiny


# ------------------------------------------------------------------ sums as NumPy's


@nb.njit(**_JIT)
def _pairwise_block(x, lo, n):
    """sum(x[lo : lo + n]) for n <= 128 as NumPy's pairwise sum does it (below)."""
    if n < 8:
        res = x.dtype.type(0.0)
        for i in range(n):
            res += x[lo + i]
        return res
    r0, r1, r2, r3 = x[lo], x[lo + 1], x[lo + 2], x[lo + 3]
    r4, r5, r6, r7 = x[lo + 4], x[lo + 5], x[lo + 6], x[lo + 7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 += x[lo + i]
        r1 += x[lo + i + 1]
        r2 += x[lo + i + 2]
        r3 += x[lo + i + 3]
        r4 += x[lo + i + 4]
        r5 += x[lo + i + 5]
        r6 += x[lo + i + 6]
        r7 += x[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += x[lo + i]
        i += 1
    return res


@nb.njit(**_JIT)
def _pairwise(x, lo, n):
    """sum(x[lo : lo + n]) exactly as NumPy's pairwise `add.reduce` of a contiguous row
    (numpy/_core/src/umath/loops_utils.h.src), in x's dtype: blocks of at most 128 summed by
    8 accumulators; above 128, the sum of the two halves (the first a multiple of 8 long).
    The recursion runs on an explicit stack: numba's on-disk cache of a recursive function
    crashes the process that loads it (numba 0.68)."""
    if n <= 128:
        return _pairwise_block(x, lo, n)
    los, ns, phase = np.empty(64, np.int64), np.empty(64, np.int64), np.zeros(64, np.int64)
    left = np.empty(64, x.dtype)
    top = 0
    los[0], ns[0] = lo, n
    ret = x.dtype.type(0.0)
    while top >= 0:
        m = ns[top]
        if m <= 128:
            ret = _pairwise_block(x, los[top], m)
            top -= 1
            continue
        m2 = m // 2
        m2 -= m2 % 8
        if phase[top] == 0:  # the first half
            phase[top] = 1
            los[top + 1], ns[top + 1], phase[top + 1] = los[top], m2, 0
            top += 1
        elif phase[top] == 1:  # the second half
            left[top] = ret
            phase[top] = 2
            los[top + 1], ns[top + 1], phase[top + 1] = los[top] + m2, m - m2, 0
            top += 1
        else:
            ret = left[top] + ret
            top -= 1
    return ret


# ------------------------------------------------------------- local derivatives


@nb.njit(**_JIT)
def local_derivatives(gates, c, tanh_c, rows, prev, a, f, d, d_prev):
    """`StateJacobians._local` of a forward cache's steps: step n reads gates[rows[n]] (B, 4H),
    c[rows[n]] (= c_{t-1}) and tanh_c[rows[n]], and for d_prev the row prev[n] of step t - 1
    (-1 at t = 0: d_prev = 0, h_0 is given). Writes a (T', B, 4H), f, d, d_prev (T', B, H) in
    a's dtype: each input rounded to it first, then the NumPy code's operations in its order
    (eqs. (10)-(13), ∂h_t/∂c_t from eq. (7)). Inputs C-contiguous (the inner loops vectorise).
    Returns whether every input it read is finite (x - x == 0 is False for inf and NaN)."""
    T, B, H = f.shape
    one = a.dtype.type(1.0)
    finite = True
    for n in range(T):
        t = rows[n]
        for b in range(B):
            gr, cp, tc = gates[t, b], c[t, b], tanh_c[t, b]
            gi, gf, gg, go = gr[:H], gr[H : 2 * H], gr[2 * H : 3 * H], gr[3 * H :]
            ar, fr, dr, pr = a[n, b], f[n, b], d[n, b], d_prev[n, b]
            ai, af, ag, ao = ar[:H], ar[H : 2 * H], ar[2 * H : 3 * H], ar[3 * H :]
            for j in range(H):
                x0, x1, x2, x3, x4, x5 = gi[j], gf[j], gg[j], go[j], tc[j], cp[j]
                ok = (x0 - x0 == 0.0) & (x1 - x1 == 0.0) & (x2 - x2 == 0.0)
                finite &= ok & (x3 - x3 == 0.0) & (x4 - x4 == 0.0) & (x5 - x5 == 0.0)
                i, fj, g, o = a.dtype.type(x0), a.dtype.type(x1), a.dtype.type(x2), a.dtype.type(x3)
                th, cj = a.dtype.type(x4), a.dtype.type(x5)
                ai[j] = g * i * (one - i)  # ∂c_t/∂z^i, eq. (10)
                af[j] = cj * fj * (one - fj)  # ∂c_t/∂z^f, eq. (11)
                ag[j] = i * (one - g * g)  # ∂c_t/∂z^g, eq. (12)
                ao[j] = th * o * (one - o)  # ∂h_t/∂z^o, eq. (13)
                fr[j] = fj
                dr[j] = o * (one - th * th)  # ∂h_t/∂c_t, eq. (7)
            if prev[n] < 0:
                for j in range(H):
                    pr[j] = 0.0  # h_0 is given, not a function of c_0
            else:
                go, tp = gates[prev[n], b][3 * H :], tanh_c[prev[n], b]
                for j in range(H):
                    o, th = a.dtype.type(go[j]), a.dtype.type(tp[j])
                    finite &= (go[j] - go[j] == 0.0) & (tp[j] - tp[j] == 0.0)
                    pr[j] = o * (one - th * th)
    return finite


@nb.njit(**_RJIT)
def all_finite(x):
    """Whether every entry of x (T, B, m) is finite: x * 0 is 0 for those, NaN for inf and NaN."""
    acc = 0.0
    for t in range(x.shape[0]):
        for b in range(x.shape[1]):
            row = x[t, b]
            for j in range(row.shape[0]):
                acc += np.float64(row[j]) * 0.0
    return acc == 0.0


# ------------------------------------------------------------------ Lyapunov sweep


@nb.njit(**_JIT)
def sweep_step(z, a, f, d, u_c, u_h, t):
    """One step of the Lyapunov sweep, after the GEMM z = W_hh u_h (B, k, 4H): the frame's
    halves u_c, u_h (B, k, H) become J_t (u_c, u_h) in place (`StateJacobians.jvp_parts`).
    a (T, B, 4H) [a^i a^f a^g a^o], f and d (T, B, H): the Jacobians' local derivatives."""
    B, k, H = u_c.shape
    for b in range(B):
        ab, fb, db = a[t, b], f[t, b], d[t, b]
        ai, af, ag, ao = ab[:H], ab[H : 2 * H], ab[2 * H : 3 * H], ab[3 * H :]
        for p in range(k):
            zb = z[b, p]
            zi, zf, zg, zo = zb[:H], zb[H : 2 * H], zb[2 * H : 3 * H], zb[3 * H :]
            uc, uh = u_c[b, p], u_h[b, p]
            for j in range(H):
                dc = uc[j] * fb[j]  # diag(f_t) u_c, eq. (6)
                dc = dc + zi[j] * ai[j]  # + B_t u_h, eqs. (10)-(12)
                dc = dc + zf[j] * af[j]
                dc = dc + zg[j] * ag[j]
                uc[j] = dc
                uh[j] = db[j] * dc + zo[j] * ao[j]  # ∂h_t/∂c_t dc + diag(a^o) U_o u_h, eqs. (7), (13)


@nb.njit(**_RJIT)
def _dot(x, y, n):
    s = 0.0
    for i in range(n):
        s += x[i] * y[i]
    return s


@nb.njit(**_RJIT)
def _orthogonalize(X, j, n):
    """X[j] minus its projections on the orthonormal rows X[:j], twice (classical Gram-Schmidt
    with one reorthogonalization: orthogonal to working precision while cond << 1/eps)."""
    x = X[j]
    for _ in range(2):
        for c in range(j):
            q = X[c]
            s = _dot(q, x, n)
            for i in range(n):
                x[i] -= s * q[i]


@nb.njit(**_RJIT)
def qr_frame(u_c, u_h, X, log_r):
    """Orthonormalize each sample's k frame rows [u_c | u_h] (B, k, H) in place, in order (the Q
    of a thin QR of the (2H, k) matrix whose columns they are, with R_jj > 0), and write
    log max(R_jj, tiny) (B, k, float64). Computed in float64 in the scratch X (k, 2H) by Gram-
    Schmidt twice: the adaptive schedule keeps the frame's condition number below e^16, far
    inside float64's 1/eps, and float32 entries cannot overflow their squares in float64
    (so R_jj and the frame agree with LAPACK's Householder QR to rounding, up to the signs of
    rows). A row that becomes exactly 0 gets R_jj = 0 and the first unit vector orthogonal to
    the rows before it (any completion makes a QR; LAPACK's is another one, so the rows after
    such a row differ from LAPACK's); inf and NaN propagate."""
    B, k, H = u_c.shape
    n = 2 * H
    for b in range(B):
        for p in range(k):
            xp = X[p]
            for i in range(H):
                xp[i] = u_c[b, p, i]
                xp[H + i] = u_h[b, p, i]
        for j in range(k):
            x = X[j]
            _orthogonalize(X, j, n)
            r = math.sqrt(_dot(x, x, n))
            log_r[b, j] = math.log(max(r, _TINY)) if r == r else r
            if r == 0.0:
                for e in range(n):  # the first unit vector not in the span of the rows before
                    for i in range(n):
                        x[i] = 0.0
                    x[e] = 1.0
                    _orthogonalize(X, j, n)
                    r = math.sqrt(_dot(x, x, n))
                    if r > 0.5:
                        break
            inv = 1.0 / r
            for i in range(n):
                x[i] *= inv
        for p in range(k):
            xp = X[p]
            for i in range(H):
                u_c[b, p, i] = xp[i]
                u_h[b, p, i] = xp[H + i]


@nb.njit(**_JIT)
def accumulate(log_r, S, add):
    """S += log_r when `add` (after the warm-up), and the two numbers `benettin`'s adaptive
    interval reads: max over samples of (max - min) of log_r over the frame, and max |log_r|
    (NaN as NumPy's max gives it: the first NaN wins)."""
    B, k = log_r.shape
    spread = -np.inf
    size = -np.inf
    for b in range(B):
        hi, lo = log_r[b, 0], log_r[b, 0]
        for j in range(k):
            x = log_r[b, j]
            if add:
                S[b, j] += x
            if x != x:
                hi = lo = x
            elif hi == hi:
                hi = max(hi, x)
                lo = min(lo, x)
            ax = abs(x)
            if ax != ax or (size == size and ax > size):
                size = ax
        d = hi - lo
        if d != d or (spread == spread and d > spread):
            spread = d
    return spread, size


# ------------------------------------------------------------- Lanczos for the norms


@nb.njit(**_JIT)
def _lanczos_update(wc, wh, qc, qh, pc, ph, alpha, beta, j, buf):
    """One Lanczos step's recurrence on the rows w = [wc | wh] (A^T A q), exactly as
    `dynamics.top_singular_value` does it with NumPy: alpha_j = w·q, w -= alpha_j q,
    w -= beta_{j-1} q_prev, beta_j = ||w||, q_prev = q, q = w / beta_j (0 when beta_j <= 1e-300).
    wh and qh, ph may have zero columns (the dc/dc operator's vectors are one half)."""
    H = wc.shape[0]
    Hh = wh.shape[0]
    n = H + Hh
    for i in range(H):
        buf[i] = wc[i] * qc[i]
    for i in range(Hh):
        buf[H + i] = wh[i] * qh[i]
    a = _pairwise(buf, 0, n)
    alpha[j] = a
    for i in range(H):
        wc[i] = wc[i] - a * qc[i]
    for i in range(Hh):
        wh[i] = wh[i] - a * qh[i]
    if j > 0:
        bp = beta[j - 1]
        for i in range(H):
            wc[i] = wc[i] - bp * pc[i]
        for i in range(Hh):
            wh[i] = wh[i] - bp * ph[i]
    for i in range(H):
        buf[i] = wc[i] * wc[i]
    for i in range(Hh):
        buf[H + i] = wh[i] * wh[i]
    b = np.sqrt(_pairwise(buf, 0, n))
    beta[j] = b
    for i in range(H):
        pc[i] = qc[i]
    for i in range(Hh):
        ph[i] = qh[i]
    if b <= 1e-300:  # the Krylov space is invariant: nothing more to add
        for i in range(H):
            qc[i] = 0.0
        for i in range(Hh):
            qh[i] = 0.0
    else:
        for i in range(H):
            qc[i] = wc[i] / b
        for i in range(Hh):
            qh[i] = wh[i] / b


@nb.njit(**_JIT)
def norms_middle(zJ, zM, qc, qM, a, f, d, dzJ, oc, mv, dzM):
    """Between the JVP GEMMs and the VJP GEMMs of one Lanczos step, for every row r (a step
    and sample) of both operators: J q (`StateJacobians.jvp`) and the element-wise half of
    J^T (J q) (`vjp`: the gate adjoints dzJ and the c half oc); M q (`dcdc_jvp`, into mv)
    and the gate adjoints of M^T (M q) (`dcdc_vjp`, dzM). zJ = W_hh q_h (R, 4H) and
    zM = W_hh[:3H] (d_prev ⊙ q_M) (R, 3H) come from the GEMMs, a (R, 4H), f, d (R, H)."""
    R, H = qc.shape
    for r in range(R):
        ar, fr, dr = a[r], f[r], d[r]
        ai, af, ag, ao = ar[:H], ar[H : 2 * H], ar[2 * H : 3 * H], ar[3 * H :]
        z, y = zJ[r], dzJ[r]
        zi, zf, zg, zo = z[:H], z[H : 2 * H], z[2 * H : 3 * H], z[3 * H :]
        yi, yf, yg, yo = y[:H], y[H : 2 * H], y[2 * H : 3 * H], y[3 * H :]
        q, o = qc[r], oc[r]
        for j in range(H):  # J q, then the element-wise part of J^T (J q), eqs. (8)-(13)
            dc = fr[j] * q[j]
            dc = dc + zi[j] * ai[j]
            dc = dc + zf[j] * af[j]
            dc = dc + zg[j] * ag[j]
            dh = dr[j] * dc + zo[j] * ao[j]
            w = dr[j] * dh + dc
            yi[j] = w * ai[j]
            yf[j] = w * af[j]
            yg[j] = w * ag[j]
            yo[j] = dh * ao[j]
            o[j] = fr[j] * w
        z, y = zM[r], dzM[r]
        zi, zf, zg = z[:H], z[H : 2 * H], z[2 * H : 3 * H]
        yi, yf, yg = y[:H], y[H : 2 * H], y[2 * H : 3 * H]
        q, m = qM[r], mv[r]
        for j in range(H):  # M q, then the gate adjoints of M^T (M q)
            v = fr[j] * q[j]
            v = v + zi[j] * ai[j]
            v = v + zf[j] * af[j]
            v = v + zg[j] * ag[j]
            m[j] = v
            yi[j] = v * ai[j]
            yf[j] = v * af[j]
            yg[j] = v * ag[j]


@nb.njit(**_JIT)
def norms_update(oc, oh, oM, mv, f, d_prev, qc, qh, pc, ph, qM, pM, uM, alphaJ, betaJ, alphaM, betaM, j):
    """After the VJP GEMMs (oh = W_hh^T dzJ, oM = W_hh[:3H]^T dzM): finish M^T (M q) and take
    Lanczos step j of both operators (`_lanczos_update`); uM = d_prev ⊙ q_M for the next JVP."""
    R, H = qc.shape
    buf = np.empty(2 * H, qc.dtype)
    empty = np.empty(0, qc.dtype)
    for r in range(R):
        _lanczos_update(oc[r], oh[r], qc[r], qh[r], pc[r], ph[r], alphaJ[r], betaJ[r], j, buf)
        o, m, fr, dp = oM[r], mv[r], f[r], d_prev[r]
        for i in range(H):
            o[i] = o[i] * dp[i] + fr[i] * m[i]  # M^T v = d_prev ⊙ (W^T dz) + f ⊙ v
        _lanczos_update(o, empty, qM[r], empty, pM[r], empty, alphaM[r], betaM[r], j, buf)
        u, q = uM[r], qM[r]
        for i in range(H):
            u[i] = dp[i] * q[i]


# --------------------------------------------------------------------- gradient fit


@nb.njit(**_JIT)
def pair_slopes(y, t, out):
    """out[s] = (y[s, j] - y[s, i]) / (t[j] - t[i]) for every pair i < j in `np.triu_indices`
    order (row by row), for each row s of y (S, n): `diagnostics.theil_sen_slope`'s slopes
    without gathering y[:, i] and y[:, j] first (the same operations, the same values)."""
    S, n = y.shape
    for s in range(S):
        ys, o = y[s], out[s]
        k = 0
        for i in range(n):
            yi, ti = ys[i], t[i]
            for j in range(i + 1, n):
                o[k] = (ys[j] - yi) / (t[j] - ti)
                k += 1


# ------------------------------------------------------- top eigenvalue of the Lanczos


@nb.njit(**_JIT)
def _below(a, b, x):
    """How many eigenvalues of the symmetric tridiagonal (a, b) are below x (Sturm count)."""
    m = a.shape[0]
    count = 0
    q = a[0] - x
    for i in range(m):
        if i:
            q = (a[i] - x) - b[i - 1] * b[i - 1] / q
        if q < 0.0:
            count += 1
        elif q == 0.0:
            q = -1e-300  # a zero pivot: perturbed as LAPACK's stebz does with pivmin
            count += 1
    return count


@nb.njit(**_JIT)
def top_eigenvalues(alpha, beta, out):
    """out[r] = the largest eigenvalue of the tridiagonal with alpha[r] (R, m) on its diagonal and
    beta[r, :m-1] beside it (`dynamics._top_ritz`'s Tm), NaN if one of those is not finite;
    by bisection on Sturm counts in float64 from Gershgorin's bounds, to 2^-60 of their size
    (LAPACK's eigvalsh on float32 matrices is accurate to ~1e-7 of it)."""
    R, m = alpha.shape
    a = np.empty(m)
    b = np.empty(max(m - 1, 1))
    for r in range(R):
        ok = True
        for i in range(m):
            a[i] = alpha[r, i]
            ok = ok and a[i] - a[i] == 0.0
        for i in range(m - 1):
            b[i] = beta[r, i]
            ok = ok and b[i] - b[i] == 0.0
        if not ok:
            out[r] = np.nan
            continue
        lo, hi = np.inf, -np.inf
        for i in range(m):
            rad = (abs(b[i - 1]) if i > 0 else 0.0) + (abs(b[i]) if i < m - 1 else 0.0)
            lo = min(lo, a[i] - rad)
            hi = max(hi, a[i] + rad)
        tol = max(abs(lo), abs(hi)) * 2.0**-60
        while hi - lo > tol:  # invariant: the top eigenvalue is in [lo, hi]
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if _below(a, b, mid) == m:
                hi = mid
            else:
                lo = mid
        out[r] = 0.5 * (lo + hi)


KERNELS = (local_derivatives, all_finite, sweep_step, qr_frame, accumulate, norms_middle, norms_update)
KERNELS += (top_eigenvalues, pair_slopes)
