"""State Jacobians of an LSTM layer, their spectra, and the Lyapunov spectrum.

Math: docs/dynamics.md. One-step Jacobians are theory.md §4.2; Lyapunov exponents by
QR re-orthonormalization (Benettin) are theory.md §4.4, after Vogt et al. 2022
(arXiv 2006.14123) and Engelken, Wolf & Abbott (arXiv 2006.02427). Equation numbers
(1)-(16) are theory.md's.

The state of one layer is s_t = (c_t, h_t) in R^{2H}, stacked [c; h]. One step maps
s_{t-1} to s_t by eqs. (1)-(7) with the layer's input x_t held fixed: for layer k > 0,
x_t = h_t of the layer below is an input, not part of this layer's state.

Indexing: step t (0-based, 0 <= t < T) is eqs. (1)-(7) at time t+1; it maps
(cache.c[t], cache.h[t]) to (cache.c[t+1], cache.h[t+1]) and its gates are
cache.gates[t]. A batch of p vectors per sample is an array (B, p, 2H) whose rows
are [u_c | u_h]; `jvp` returns the rows of (J_t U^T)^T, `vjp` those of (J_t^T V^T)^T.
With a slice of steps the arrays gain a leading time axis: (T', B, p, 2H).

Pure NumPy; no I/O, no printing. Everything is computed in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .engine import LayerCache

Steps = int | slice


# ------------------------------------------------------------- one-step Jacobians


@dataclass(frozen=True)
class StateJacobians:
    """The one-step Jacobians J_t = ∂s_t/∂s_{t-1} of one layer along a forward pass.

    Kept as the local derivatives they are made of, never as dense matrices:
    with U_i, U_f, U_g, U_o the gate blocks of W_hh (theory.md §4.2),

        B_t     = diag(a^f) U_f + diag(a^i) U_i + diag(a^g) U_g     (= ∂c_t/∂h_{t-1})
        J_t     = [[diag f_t,        B_t                             ],
                   [diag(d_t ⊙ f_t), diag(a^o) U_o + diag(d_t) B_t  ]]

    a^i = g ⊙ i(1-i), a^f = c_{t-1} ⊙ f(1-f), a^g = i ⊙ (1-g²) are ∂c_t/∂z_t of
    eqs. (10)-(12); a^o = tanh c_t ⊙ o(1-o) is ∂h_t/∂z^o_t of eq. (13);
    d_t = o_t ⊙ (1 - tanh² c_t) is ∂h_t/∂c_t.
    """

    W_hh: np.ndarray  # (4H, H) rows [U_i; U_f; U_g; U_o]
    f: np.ndarray  # (T, B, H)     f_t = ∂c_t/∂c_{t-1}
    a: np.ndarray  # (T, B, 4, H)  [a^i, a^f, a^g, a^o]
    d: np.ndarray  # (T, B, H)     d_t = ∂h_t/∂c_t
    d_prev: np.ndarray  # (T, B, H)  d_{t-1} = ∂h_{t-1}/∂c_{t-1}; 0 at t = 0 (h_0 is given)
    W_hh_T: np.ndarray = field(init=False, repr=False)  # (H, 4H) contiguous, for the JVP matmul

    def __post_init__(self):
        object.__setattr__(self, "W_hh_T", np.ascontiguousarray(self.W_hh.T))

    @classmethod
    def from_cache(cls, cache: LayerCache, W_hh: np.ndarray) -> StateJacobians:
        """Local derivatives of every step from a forward cache (no recomputation)."""
        gates = np.asarray(cache.gates, np.float64)
        T, B, H4 = gates.shape
        H = H4 // 4
        g4 = gates.reshape(T, B, 4, H)
        i, f, g, o = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2], g4[:, :, 3]  # (T, B, H) each
        tanh_c = np.asarray(cache.tanh_c, np.float64)  # tanh c_t
        c_prev = np.asarray(cache.c[:-1], np.float64)  # c_{t-1}
        a = np.empty((T, B, 4, H))
        a[:, :, 0] = g * i * (1.0 - i)  # ∂c_t/∂z^i, eq. (10)
        a[:, :, 1] = c_prev * f * (1.0 - f)  # ∂c_t/∂z^f, eq. (11)
        a[:, :, 2] = i * (1.0 - g * g)  # ∂c_t/∂z^g, eq. (12)
        a[:, :, 3] = tanh_c * o * (1.0 - o)  # ∂h_t/∂z^o, eq. (13)
        d = o * (1.0 - tanh_c * tanh_c)  # ∂h_t/∂c_t from eq. (7)
        d_prev = np.zeros_like(d)
        d_prev[1:] = d[:-1]
        return cls(np.asarray(W_hh, np.float64), np.ascontiguousarray(f), a, d, d_prev)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(T, B, H)."""
        return self.f.shape

    def samples(self, index: slice | np.ndarray) -> StateJacobians:
        """The same Jacobians for a subset of the batch."""
        f, a, d, d_prev = (np.ascontiguousarray(x[:, index]) for x in (self.f, self.a, self.d, self.d_prev))
        return StateJacobians(self.W_hh, f, a, d, d_prev)

    # -------------------------------------------------------------- J_t and J_t^T

    def jvp(self, t: Steps, u: np.ndarray) -> np.ndarray:
        """J_t u for a batch of vectors u (B, p, 2H) (or (T', B, p, 2H) for a slice)."""
        H = self.f.shape[-1]
        u_c, u_h = u[..., :H], u[..., H:]
        dz = (u_h @ self.W_hh_T).reshape(u.shape[:-1] + (4, H))  # (..., p, 4, H) = W_hh u_h, eq. (1)
        dz *= self.a[t][..., None, :, :]  # (..., p, 4, H) gate parts of dc_t, dh_t
        out = np.empty(u.shape)
        dc, dh = out[..., :H], out[..., H:]
        np.multiply(self.f[t][..., None, :], u_c, out=dc)  # diag(f_t) u_c, eq. (6)
        dc += dz[..., 0, :]
        dc += dz[..., 1, :]
        dc += dz[..., 2, :]  # + B_t u_h
        np.multiply(self.d[t][..., None, :], dc, out=dh)  # ∂h_t/∂c_t dc_t, eq. (7)
        dh += dz[..., 3, :]  # + diag(a^o) U_o u_h
        return out

    def vjp(self, t: Steps, v: np.ndarray) -> np.ndarray:
        """J_t^T v for a batch of vectors v (B, p, 2H): one BPTT step, eqs. (8)-(13)."""
        H = self.f.shape[-1]
        v_c, v_h = v[..., :H], v[..., H:]
        w = v_c + self.d[t][..., None, :] * v_h  # (..., p, H) total adjoint of c_t, eq. (9)
        dz = np.empty(v.shape[:-1] + (4, H))  # (..., p, 4, H)
        np.multiply(self.a[t][..., None, :3, :], w[..., None, :], out=dz[..., :3, :])  # eqs. (10)-(12)
        np.multiply(self.a[t][..., None, 3, :], v_h, out=dz[..., 3, :])  # eq. (13)
        out = np.empty(v.shape)
        np.multiply(self.f[t][..., None, :], w, out=out[..., :H])  # δc_t ⊙ f_t, eq. (9)
        np.matmul(dz.reshape(v.shape[:-1] + (4 * H,)), self.W_hh, out=out[..., H:])  # W_hh^T δz, eq. (8)
        return out

    def dense(self, t: Steps) -> np.ndarray:
        """The dense J_t, (B, 2H, 2H) (or (T', B, 2H, 2H)); for small H and for tests."""
        H = self.f.shape[-1]
        f, a, d = self.f[t], self.a[t], self.d[t]
        U = self.W_hh.reshape(4, H, H)  # (4, H, H) [U_i, U_f, U_g, U_o]
        Bt = np.einsum("...gj,gjk->...jk", a[..., :3, :], U[:3])  # (..., H, H) ∂c_t/∂h_{t-1}
        J = np.zeros(f.shape[:-1] + (2 * H, 2 * H))
        diag = np.arange(H)
        J[..., diag, diag] = f  # ∂c_t/∂c_{t-1} = diag f_t
        J[..., :H, H:] = Bt
        J[..., H + diag, diag] = d * f  # ∂h_t/∂c_{t-1}
        J[..., H:, H:] = a[..., 3, :, None] * U[3] + d[..., :, None] * Bt  # ∂h_t/∂h_{t-1}
        return J

    # ------------------------------------------------- the cell-to-cell Jacobian

    def dcdc_jvp(self, t: Steps, u: np.ndarray) -> np.ndarray:
        """M_t u with M_t = dc_t/dc_{t-1} = diag(f_t) + B_t diag(d_{t-1}) (theory.md §4.2).

        The path through h_{t-1} = o_{t-1} ⊙ tanh c_{t-1} with o_{t-1} held fixed;
        at t = 0, h_0 is given and M_0 = diag(f_1). u (B, p, H).
        """
        H = self.f.shape[-1]
        dh = self.d_prev[t][..., None, :] * u  # (..., p, H) dh_{t-1}
        dz = (dh @ self.W_hh[: 3 * H].T).reshape(u.shape[:-1] + (3, H))  # (..., p, 3, H)
        dz *= self.a[t][..., None, :3, :]
        return self.f[t][..., None, :] * u + dz.sum(axis=-2)

    def dcdc_vjp(self, t: Steps, v: np.ndarray) -> np.ndarray:
        """M_t^T v, v (B, p, H)."""
        H = self.f.shape[-1]
        dz = self.a[t][..., None, :3, :] * v[..., None, :]  # (..., p, 3, H)
        dh = dz.reshape(v.shape[:-1] + (3 * H,)) @ self.W_hh[: 3 * H]  # (..., p, H)
        return self.f[t][..., None, :] * v + self.d_prev[t][..., None, :] * dh

    def dcdc_dense(self, t: Steps) -> np.ndarray:
        """The dense M_t, (B, H, H) (or (T', B, H, H))."""
        H = self.f.shape[-1]
        U = self.W_hh.reshape(4, H, H)
        Bt = np.einsum("...gj,gjk->...jk", self.a[t][..., :3, :], U[:3])  # (..., H, H)
        M = Bt * self.d_prev[t][..., None, :]
        diag = np.arange(H)
        M[..., diag, diag] += self.f[t]
        return M

    # ----------------------------------------------------------- window products

    def window_jvp(self, start: int, stop: int, u: np.ndarray) -> np.ndarray:
        """J_{stop-1} ... J_{start} u: steps start..stop-1 in order, one JVP each."""
        for t in range(start, stop):
            u = self.jvp(t, u)
        return u

    def window_vjp(self, start: int, stop: int, v: np.ndarray) -> np.ndarray:
        """(J_{stop-1} ... J_{start})^T v: the same steps in reverse, one VJP each."""
        for t in range(stop - 1, start - 1, -1):
            v = self.vjp(t, v)
        return v


# ------------------------------------------------------------ spectral norms


def top_singular_value(
    mv: Callable[[np.ndarray], np.ndarray],
    rmv: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, ...],
    steps: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Largest singular value of many small operators A at once, by Lanczos on A^T A.

    mv(u) = A u and rmv(v) = A^T v act on stacks of row vectors (..., 1, n); `shape`
    is (..., n); returns (...). Each of the `steps` Lanczos steps costs one A and one
    A^T product (three-term recurrence, no re-orthogonalization). The largest Ritz
    value is a lower bound that converges from below; exact in exact arithmetic once
    steps >= n.
    """
    lead = shape[:-1]
    alpha = np.zeros(lead + (steps,))
    beta = np.zeros(lead + (steps,))
    q = rng.standard_normal(shape)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q_prev = np.zeros(shape)
    for j in range(steps):
        w = rmv(mv(q[..., None, :]))[..., 0, :]  # A^T A q_j
        alpha[..., j] = np.einsum("...n,...n->...", w, q)
        w -= alpha[..., j, None] * q
        if j:
            w -= beta[..., j - 1, None] * q_prev
        beta[..., j] = np.linalg.norm(w, axis=-1)
        q_prev = q
        b = beta[..., j, None]
        q = np.divide(w, b, out=np.zeros(shape), where=b > 1e-300)  # 0 once the space is invariant
    m = np.arange(steps)
    Tm = np.zeros(lead + (steps, steps))  # (..., m, m) the tridiagonal projection of A^T A
    Tm[..., m, m] = alpha
    Tm[..., m[1:], m[:-1]] = Tm[..., m[:-1], m[1:]] = beta[..., :-1]
    return np.sqrt(np.maximum(np.linalg.eigvalsh(Tm)[..., -1], 0.0))


def spectral_norms(jac: StateJacobians, steps: int | None = 12, seed: int = 0) -> np.ndarray:
    """||J_t||_2 per step and sample, (T, B).

    steps=None: exact, by the SVD of every dense J_t (costly: T·B SVDs of 2H x 2H);
    otherwise `steps` Lanczos steps (see `top_singular_value`).
    """
    T, B, H = jac.shape
    if steps is None:
        return np.linalg.svd(jac.dense(slice(None)), compute_uv=False)[..., 0]
    rng = np.random.default_rng(seed)
    t = slice(None)
    return top_singular_value(lambda u: jac.jvp(t, u), lambda v: jac.vjp(t, v), (T, B, 2 * H), steps, rng)


def dcdc_norms(jac: StateJacobians, steps: int | None = 12, seed: int = 0) -> np.ndarray:
    """||dc_t/dc_{t-1}||_2 per step and sample, (T, B); steps as in `spectral_norms`."""
    T, B, H = jac.shape
    if steps is None:
        return np.linalg.svd(jac.dcdc_dense(slice(None)), compute_uv=False)[..., 0]
    rng = np.random.default_rng(seed)
    t = slice(None)
    return top_singular_value(
        lambda u: jac.dcdc_jvp(t, u), lambda v: jac.dcdc_vjp(t, v), (T, B, H), steps, rng
    )


def cell_path_norms(jac: StateJacobians) -> np.ndarray:
    """||diag f_t||_2 = max_j f_t,j per step and sample, (T, B): the CEC path alone."""
    return jac.f.max(axis=-1)


# ---------------------------------------------------- window singular values


def window_singular_values(
    jac: StateJacobians,
    k: int,
    window: int,
    stop: int | None = None,
    oversample: int | None = None,
    max_iter: int = 10,
    rtol: float = 1e-3,
    seed: int = 0,
) -> np.ndarray:
    """Top-k singular values of P = J_{stop-1} ... J_{stop-window} per sample, (B, k).

    Subspace iteration on P^T P with p = k + oversample vectors (oversample defaults
    to k), each product taken as `window` JVPs and `window` VJPs, never as a dense
    matrix; the Ritz values are the singular values of P Q (lower bounds). Stops when
    each of the top k changed by less than rtol (relative) in the last iteration; the
    error is then typically far below rtol. stop defaults to T: the window ending at
    the last step, through which a loss on the last output flows back first.
    The vectors are rescaled at every step and the scale is kept as a logarithm, so
    long windows neither overflow nor underflow on the way (the values themselves
    may: beyond ~e^709 they are inf, below ~e^-745 zero).
    """
    T, B, H = jac.shape
    n = 2 * H
    stop = T if stop is None else stop
    start = stop - window
    if not (1 <= k <= n and 0 <= start < stop <= T):
        raise ValueError(f"window_singular_values: need 1 <= k <= {n} and a window inside 0..{T}")
    p = min(n, k + (k if oversample is None else oversample))
    rng = np.random.default_rng(seed)
    Q = _orthonormal_rows(rng.standard_normal((B, p, n)))  # (B, p, 2H)
    s_old = np.full((B, k), np.inf)
    for _ in range(max_iter):
        Y, log_scale = _scaled_sweep(jac.jvp, range(start, stop), Q)  # P Q^T = e^log_scale Y^T
        with np.errstate(over="ignore", under="ignore"):
            s = np.linalg.svd(Y, compute_uv=False) * np.exp(log_scale)[:, None]  # (B, p)
        if np.all(np.abs(s[:, :k] - s_old) <= rtol * s[:, :k]):
            break
        s_old = s[:, :k]
        Z, _ = _scaled_sweep(jac.vjp, range(stop - 1, start - 1, -1), Y)  # ∝ P^T P Q^T
        Q = _orthonormal_rows(Z)
    return s[:, :k]


def _scaled_sweep(step: Callable, steps: range, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply step(t, ·) for t in steps to U (B, p, n), dividing each sample's block by its
    largest row norm after every step. Returns the block and the log of the total scale (B,)."""
    log_scale = np.zeros(U.shape[0])
    for t in steps:
        U = step(t, U)
        norm = np.sqrt(np.einsum("bpn,bpn->bp", U, U).max(axis=1))  # (B,)
        norm[norm == 0] = 1.0
        U /= norm[:, None, None]
        log_scale += np.log(norm)
    return U, log_scale


def _orthonormal_rows(U: np.ndarray) -> np.ndarray:
    """Orthonormalize the p rows of every (p, n) matrix of a stack (B, p, n)."""
    Q, _ = np.linalg.qr(np.swapaxes(U, -1, -2))  # (B, n, p)
    return np.swapaxes(Q, -1, -2)


# ---------------------------------------------------------- Lyapunov spectrum


@dataclass
class Lyapunov:
    """Lyapunov exponents (natural log, per step), largest first."""

    per_sample: np.ndarray  # (B, k) one estimate per trajectory
    steps: int  # steps accumulated after the warm-up

    @property
    def mean(self) -> np.ndarray:
        return self.per_sample.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """Spread across samples (ddof 1; NaN for one sample): the convergence estimate."""
        B = self.per_sample.shape[0]
        return self.per_sample.std(axis=0, ddof=1) if B > 1 else np.full(self.per_sample.shape[1], np.nan)

    @property
    def stderr(self) -> np.ndarray:
        return self.std / np.sqrt(self.per_sample.shape[0])


def benettin(
    step: Callable[[int, np.ndarray], np.ndarray],
    Q: np.ndarray,
    T: int,
    warmup: int = 0,
    qr_every: int | None = None,
) -> Lyapunov:
    """Lyapunov exponents by QR re-orthonormalization (theory.md §4.4).

    step(t, U) returns J_t U for U (B, k, n) (rows); Q (B, k, n) has orthonormal rows.
    Steps 0..warmup-1 only align Q (their growth is discarded); steps warmup..T-1 add
    log|diag R| of the QR factorizations, which are also taken at the end of the
    warm-up and of the run. Returns S / (T - warmup), per sample.

    qr_every: steps between QR factorizations. None chooses it as it goes: after each
    QR the spread of log|diag R| per step, max over samples of (λ_1 - λ_k)·steps, sets
    the next interval so that the frame's condition number stays below e^LOG_COND
    (at most MAX_QR_EVERY steps). Between factorizations the rows of Q stop being
    orthonormal, but the product of the R factors, hence S, is the same.
    """
    B, k, _ = Q.shape
    S = np.zeros((B, k))
    tiny = np.finfo(np.float64).tiny
    every = 1 if qr_every is None else qr_every
    since = 0
    for t in range(T):
        Q = step(t, Q)  # (B, k, n)
        since += 1
        if since == every or t == warmup - 1 or t == T - 1:
            Qt, R = np.linalg.qr(np.swapaxes(Q, -1, -2))  # (B, n, k), (B, k, k)
            Q = np.swapaxes(Qt, -1, -2)
            log_r = np.log(np.maximum(np.abs(np.diagonal(R, axis1=-2, axis2=-1)), tiny))  # (B, k)
            if t >= warmup:
                S += log_r
            if qr_every is None:
                spread = float(np.max(log_r.max(axis=-1) - log_r.min(axis=-1))) / since
                every = int(np.clip(LOG_COND / max(spread, 1e-12), 1, MAX_QR_EVERY))
            since = 0
    return Lyapunov(per_sample=S / (T - warmup), steps=T - warmup)


LOG_COND = 16.0  # adaptive QR: keep cond(Q) below e^16 ≈ 9e6 between factorizations
MAX_QR_EVERY = 8


def lyapunov_spectrum(
    jac: StateJacobians, k: int, warmup: int = 0, qr_every: int | None = None, seed: int = 0
) -> Lyapunov:
    """The top-k Lyapunov exponents of the layer's state dynamics, one estimate per sample.

    Q starts as a random orthonormal k-frame (Engelken et al.), drawn independently
    for every sample, so that the spread across samples also covers the choice of
    the initial frame. The columns come out in Benettin's order; they are sorted by
    their mean over samples (largest first), which only matters for near-equal
    exponents.
    """
    T, B, H = jac.shape
    n = 2 * H
    if not 1 <= k <= n:
        raise ValueError(f"k: must be in 1..2H = 1..{n}, got {k}")
    if not 0 <= warmup < T:
        raise ValueError(f"warmup: must be in 0..T-1 = 0..{T - 1}, got {warmup}")
    rng = np.random.default_rng(seed)
    Q = _orthonormal_rows(rng.standard_normal((B, k, n)))  # (B, k, 2H)
    res = benettin(jac.jvp, Q, T, warmup, qr_every)
    order = np.argsort(-res.per_sample.mean(axis=0), kind="stable")  # largest first
    res.per_sample = res.per_sample[:, order]
    return res


# ------------------------------------------- gradient growth, predicted vs measured


def log_slope(y: np.ndarray, t: np.ndarray | None = None) -> float:
    """Theil-Sen slope of log y against t: the median of all pairwise slopes.

    Robust to a few outlying steps (a transient near the loss, a spike). Entries of y
    that are not finite, or below the smallest normal float64 (zero after underflow,
    or subnormal and imprecise), are left out; NaN if fewer than two remain.
    """
    y = np.asarray(y, np.float64)
    t = np.arange(y.size, dtype=np.float64) if t is None else np.asarray(t, np.float64)
    keep = np.isfinite(y) & (y >= np.finfo(np.float64).tiny)
    ly, t = np.log(y[keep]), t[keep]
    if ly.size < 2:
        return float("nan")
    i, j = np.triu_indices(ly.size, k=1)
    return float(np.median((ly[j] - ly[i]) / (t[j] - t[i])))


def gradient_growth_rate(grad_c_norm: np.ndarray, start: int = 0, stop: int | None = None) -> float:
    """Measured per-step growth of ||dL/dc_t|| going back in time, over steps [start, stop).

    = -(slope of log ||dL/dc_t|| against t), so that ||dL/dc_{t-k}|| ≈ e^{rate·k} ||dL/dc_t||:
    negative when the gradient vanishes toward early steps; comparable with the
    largest Lyapunov exponent λ_1. grad_c_norm (T,), index t = step t as in the engine.
    """
    y = np.asarray(grad_c_norm)[start:stop]
    return -log_slope(y, np.arange(start, start + y.size))


def gradient_growth_rates(grad_c: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
    """`gradient_growth_rate` of every sample's ||dL/dc_t||_2, (B,). grad_c (T, B, H).

    Per sample, like the Lyapunov exponents: a norm over the whole batch is
    dominated by its fastest-growing sample and overstates the typical rate when
    gradients explode.
    """
    norms = np.sqrt(np.einsum("tbh,tbh->bt", grad_c, grad_c))  # (B, T)
    return np.array([gradient_growth_rate(n, start, stop) for n in norms])


def compare_growth(lyap: Lyapunov, rates: np.ndarray) -> dict:
    """The per-step growth of ||dL/dc_t|| that λ_1 predicts against the measured one.

    Both are means over samples with their spread (std over samples); a factor is
    what ||dL/dc|| gains per step back in time (e^rate). same_sign is None when
    either rate is undefined (NaN).
    """
    lam, lam_std = float(lyap.mean[0]), float(lyap.std[0])
    ok = np.isfinite(rates)
    measured = float(np.mean(rates[ok])) if ok.any() else float("nan")
    measured_std = float(np.std(rates[ok], ddof=1)) if ok.sum() > 1 else float("nan")
    both = np.isfinite(lam) and np.isfinite(measured)
    return {
        "predicted_rate": lam,
        "predicted_std": lam_std,
        "measured_rate": measured,
        "measured_std": measured_std,
        "predicted_factor": float(np.exp(lam)),
        "measured_factor": float(np.exp(measured)),
        "difference": measured - lam,
        "same_sign": bool(np.sign(lam) == np.sign(measured)) if both else None,
    }


# ------------------------------------------------------------------- summary


def layer_dynamics(
    cache: LayerCache,
    W_hh: np.ndarray,
    k: int = 8,
    warmup: int | None = None,
    window: int = 20,
    window_k: int = 4,
    norm_samples: int | None = 4,
    lanczos_steps: int | None = 12,
    qr_every: int | None = None,
    seed: int = 0,
    grad_c: np.ndarray | None = None,
) -> dict:
    """Everything above for one layer, as plain JSON-able data (`layers[k].dynamics`).

    k: how many Lyapunov exponents (clipped to 2H), from every sample of the batch;
    warmup: steps discarded before accumulating (default T // 4);
    window, window_k: the product over the last `window` steps (clipped to T) and how
    many of its singular values (0: skip), median over the batch;
    norm_samples: the per-step norms (spectral, cell path, dc/dc) use the first
    norm_samples samples (None: all; 0: skip) and report their median per step;
    lanczos_steps: Lanczos steps for them (None: exact SVD); qr_every: see `benettin`.
    With grad_c (T, B, H), this layer's dL/dc_t (the engine's `LayerGrads.dc`), adds
    "gradient": the measured per-step growth of ||dL/dc_t|| per sample over the same
    steps [warmup, T) against the one λ_1 predicts (`compare_growth`).
    A forward pass with non-finite values gives NaN everywhere (null in JSON).
    """
    jac = StateJacobians.from_cache(cache, W_hh)
    T, B, H = jac.shape
    k = min(k, 2 * H)
    window = min(window, T)
    window_k = min(window_k, 2 * H)
    warmup = T // 4 if warmup is None else warmup
    S = B if norm_samples is None else min(norm_samples, B)
    finite = all(np.isfinite(x).all() for x in (jac.f, jac.a, jac.d))
    settings = {
        "k": k,
        "warmup": warmup,
        "steps": T - warmup,
        "samples": B,
        "state_size": 2 * H,
        "qr_every": "adaptive" if qr_every is None else qr_every,
        "window": window,
        "window_k": window_k,
        "norm_samples": S,
        "lanczos_steps": lanczos_steps,
        "aggregate": "Lyapunov: mean over samples; norms: median over samples",
        "log": "natural, per step",
    }
    if not finite:
        nan = float("nan")
        out = {
            "lyapunov": [nan] * k,
            "lyapunov_std": [nan] * k,
            "lyapunov_stderr": [nan] * k,
            "spectral_norm": [nan] * T if S else [],
            "cell_path_norm": [nan] * T if S else [],
            "dcdc_norm": [nan] * T if S else [],
            "window_singular_values": [nan] * window_k,
            "settings": settings,
        }
        if grad_c is not None:
            out["gradient"] = compare_growth(Lyapunov(np.full((1, 1), nan), T - warmup), np.array([nan]))
        return out
    lyap = lyapunov_spectrum(jac, k, warmup, qr_every, seed)
    out = {
        "lyapunov": lyap.mean.tolist(),
        "lyapunov_std": lyap.std.tolist(),
        "lyapunov_stderr": lyap.stderr.tolist(),
        "spectral_norm": [],
        "cell_path_norm": [],
        "dcdc_norm": [],
        "window_singular_values": [],
        "settings": settings,
    }
    if S:
        sub = jac.samples(slice(0, S))
        out["spectral_norm"] = np.median(spectral_norms(sub, lanczos_steps, seed), axis=1).tolist()
        out["cell_path_norm"] = np.median(cell_path_norms(sub), axis=1).tolist()
        out["dcdc_norm"] = np.median(dcdc_norms(sub, lanczos_steps, seed), axis=1).tolist()
    if window_k:
        sv = window_singular_values(jac, window_k, window, seed=seed)  # (B, window_k)
        out["window_singular_values"] = np.median(sv, axis=0).tolist()
    if grad_c is not None:
        out["gradient"] = compare_growth(lyap, gradient_growth_rates(grad_c, warmup, T))
    return out
