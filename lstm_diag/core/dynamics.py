"""State Jacobians of an LSTM layer, their spectra, and the Lyapunov spectrum.

Math: docs/dynamics.md. One-step Jacobians are docs/theory.md §4.2; Lyapunov exponents by
QR re-orthonormalization (Benettin) are docs/theory.md §4.4, after Vogt et al. 2022
(arXiv 2006.14123) and Engelken, Wolf & Abbott (arXiv 2006.02427). Equation numbers
(1)-(23) are docs/equations.md's.

The state of one layer is s_t = (c_t, h_t) in R^{2H}, stacked [c; h]. One step maps
s_{t-1} to s_t by eqs. (1)-(7) with the layer's input x_t held fixed: for layer k > 0,
x_t = h_t of the layer below is an input, not part of this layer's state.

Indexing: step t (0-based, 0 <= t < T) is eqs. (1)-(7) at time t+1; it maps
(cache.c[t], cache.h[t]) to (cache.c[t+1], cache.h[t+1]) and its gates are
cache.gates[t]. A batch of p vectors per sample is an array (B, p, 2H) whose rows
are [u_c | u_h]; `jvp` returns the rows of (J_t U^T)^T, `vjp` those of (J_t^T V^T)^T.
With a slice of steps the arrays gain a leading time axis: (T', B, p, 2H).

Pure NumPy; no I/O, no printing. Computed in the dtype of the forward cache, like the
engine (float64 arithmetic adds nothing to Jacobians made of float32 gates); sums of
logarithms and scales are kept in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .diagnostics import theil_sen_slope
from .engine import LayerCache

Steps = int | slice
Frame = object  # what `benettin` steps: the rows U (B, k, n), or any form split/join convert


# ------------------------------------------------------------- one-step Jacobians


def _rows_matmul(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """x (..., m) @ W (m, n) as one GEMM over all rows. NumPy's matmul of a stack
    (..., p, m) runs one small product per leading index, several times slower."""
    return (x.reshape(-1, x.shape[-1]) @ W).reshape(x.shape[:-1] + (W.shape[1],))


@dataclass(frozen=True)
class StateJacobians:
    """The one-step Jacobians J_t = ∂s_t/∂s_{t-1} of one layer along a forward pass.

    Kept as the local derivatives they are made of, never as dense matrices:
    with U_i, U_f, U_g, U_o the gate blocks of W_hh (docs/theory.md §4.2),

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
    # (H, 4H) contiguous, for the JVP matmul; made from W_hh unless given (a transpose of a
    # large W_hh costs a few ms: the Jacobians of one layer share it)
    W_hh_T: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        T, B, H = self.f.shape
        set_ = object.__setattr__
        if self.W_hh_T is None:
            set_(self, "W_hh_T", np.ascontiguousarray(self.W_hh.T))
        # the same arrays with an axis for the p vectors of a batch, indexed [t] in every step
        set_(self, "_a", self.a.reshape(T, B, 1, 4 * H))  # (T, B, 1, 4H) [a^i a^f a^g a^o]
        set_(self, "_f", self.f[:, :, None, :])  # (T, B, 1, H)
        set_(self, "_d", self.d[:, :, None, :])
        set_(self, "_d_prev", self.d_prev[:, :, None, :])

    @classmethod
    def from_cache(
        cls,
        cache: LayerCache,
        W_hh: np.ndarray,
        steps: np.ndarray | slice | None = None,
        W_hh_T: np.ndarray | None = None,
        dtype: np.dtype | type | None = None,
    ) -> StateJacobians:
        """Local derivatives of every step from a forward cache (no recomputation).

        steps: only these steps (indices t of the cache, increasing), e.g. the last n or
        every s-th; d_prev is then d at each step's own predecessor t - 1 (0 at t = 0), so
        every one-step quantity equals the whole trajectory's at that step, bit for bit.
        W_hh_T: W_hh.T as a contiguous array in the dtype computed in, when the caller has it.
        dtype: compute in this dtype (float32 or float64) instead of the cache's.
        """
        dt = np.result_type(cache.gates.dtype if dtype is None else dtype, np.float32)  # float32 stays
        T_all = cache.gates.shape[0]
        t = np.arange(T_all)[slice(None) if steps is None else steps]  # (T,) the steps kept
        if t.size and t[0] == 0 and np.all(np.diff(t) == 1):
            prev = None  # a run from step 0: d_prev is d shifted by one, as for every step
        else:
            prev = np.maximum(t - 1, 0)  # each step's predecessor (0 for t = 0, zeroed below)
        a, f, d = cls._local(cache, t, dt)
        if prev is None:
            d_prev = np.zeros_like(d)
            d_prev[1:] = d[:-1]
        else:
            _, _, d_prev = cls._local(cache, prev, dt, only_d=True)
            d_prev[t == 0] = 0.0  # h_0 is given, not a function of c_0
        return cls(np.asarray(W_hh, dt), np.ascontiguousarray(f), a, d, d_prev, W_hh_T)

    @staticmethod
    def _local(cache: LayerCache, t: np.ndarray, dt, only_d: bool = False):
        """a (T', B, 4, H), f (T', B, H) and d (T', B, H) at the steps t of the cache."""
        whole = t.size == cache.gates.shape[0]  # every step: views, no gather
        pick = (lambda x: x) if whole else (lambda x: x[t])
        gates = np.asarray(pick(cache.gates), dt)
        T, B, H4 = gates.shape
        H = H4 // 4
        g4 = gates.reshape(T, B, 4, H)
        i, f, g, o = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2], g4[:, :, 3]  # (T', B, H) each
        tanh_c = np.asarray(pick(cache.tanh_c), dt)  # tanh c_t
        d = o * (1.0 - tanh_c * tanh_c)  # ∂h_t/∂c_t from eq. (7)
        if only_d:
            return None, None, d
        c_prev = np.asarray(cache.c[:-1] if whole else cache.c[t], dt)  # c_{t-1}
        a = np.empty((T, B, 4, H), dt)
        a[:, :, 0] = g * i * (1.0 - i)  # ∂c_t/∂z^i, eq. (10)
        a[:, :, 1] = c_prev * f * (1.0 - f)  # ∂c_t/∂z^f, eq. (11)
        a[:, :, 2] = i * (1.0 - g * g)  # ∂c_t/∂z^g, eq. (12)
        a[:, :, 3] = tanh_c * o * (1.0 - o)  # ∂h_t/∂z^o, eq. (13)
        return a, f, d

    @property
    def dtype(self) -> np.dtype:
        """float32 or float64, the forward cache's."""
        return self.f.dtype

    @property
    def shape(self) -> tuple[int, int, int]:
        """(T, B, H)."""
        return self.f.shape

    def samples(self, index: slice | np.ndarray) -> StateJacobians:
        """The same Jacobians for a subset of the batch."""
        f, a, d, d_prev = (np.ascontiguousarray(x[:, index]) for x in (self.f, self.a, self.d, self.d_prev))
        return StateJacobians(self.W_hh, f, a, d, d_prev, self.W_hh_T)

    def at_steps(self, index: slice | np.ndarray) -> StateJacobians:
        """The Jacobians of a subset of the steps (for one-step quantities, not products)."""
        f, a, d, d_prev = (np.ascontiguousarray(x[index]) for x in (self.f, self.a, self.d, self.d_prev))
        return StateJacobians(self.W_hh, f, a, d, d_prev, self.W_hh_T)

    # -------------------------------------------------------------- J_t and J_t^T

    def jvp(self, t: Steps, u: np.ndarray) -> np.ndarray:
        """J_t u for a batch of vectors u (B, p, 2H) (or (T', B, p, 2H) for a slice)."""
        H = self.f.shape[-1]
        return np.concatenate(self.jvp_parts(t, u[..., :H], u[..., H:]), axis=-1)

    def jvp_parts(self, t: Steps, u_c: np.ndarray, u_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`jvp` on a state kept as its halves: (dc, dh) = J_t (u_c, u_h), each (B, p, H)."""
        H = self.f.shape[-1]
        z = _rows_matmul(u_h, self.W_hh_T)  # (..., p, 4H) W_hh u_h, eq. (1)
        z *= self._a[t]  # gate parts of dc_t and dh_t, eqs. (10)-(13)
        dc = self._f[t] * u_c  # diag(f_t) u_c, eq. (6)
        dc += z[..., :H]
        dc += z[..., H : 2 * H]
        dc += z[..., 2 * H : 3 * H]  # + B_t u_h
        dh = self._d[t] * dc  # ∂h_t/∂c_t dc_t, eq. (7)
        dh += z[..., 3 * H :]  # + diag(a^o) U_o u_h
        return dc, dh

    def vjp(self, t: Steps, v: np.ndarray) -> np.ndarray:
        """J_t^T v for a batch of vectors v (B, p, 2H): one BPTT step, eqs. (8)-(13)."""
        H = self.f.shape[-1]
        v_h = v[..., H:]
        w = self._d[t] * v_h
        w += v[..., :H]  # (..., p, H) total adjoint of c_t, eq. (9)
        a = self._a[t]  # (..., 1, 4H)
        dz = np.empty(w.shape[:-1] + (4 * H,), self.dtype)  # (..., p, 4H)
        a3 = a[..., : 3 * H].reshape(a.shape[:-1] + (3, H))  # (..., 1, 3, H) [a^i a^f a^g]
        dz3 = dz.reshape(dz.shape[:-1] + (4, H))[..., :3, :]  # (..., p, 3, H) view
        np.multiply(w[..., None, :], a3, out=dz3)  # eqs. (10)-(12): a^i w, a^f w, a^g w
        np.multiply(v_h, a[..., 3 * H :], out=dz[..., 3 * H :])  # eq. (13): a^o v_h
        out = np.empty(v.shape, self.dtype)
        np.multiply(self._f[t], w, out=out[..., :H])  # δc_t ⊙ f_t, eq. (9)
        out[..., H:] = _rows_matmul(dz, self.W_hh)  # W_hh^T δz, eq. (8)
        return out

    def dense(self, t: Steps) -> np.ndarray:
        """The dense J_t, (B, 2H, 2H) (or (T', B, 2H, 2H)); for small H and for tests."""
        H = self.f.shape[-1]
        f, a, d = self.f[t], self.a[t], self.d[t]
        U = self.W_hh.reshape(4, H, H)  # (4, H, H) [U_i, U_f, U_g, U_o]
        Bt = np.einsum("...gj,gjk->...jk", a[..., :3, :], U[:3])  # (..., H, H) ∂c_t/∂h_{t-1}
        J = np.zeros(f.shape[:-1] + (2 * H, 2 * H), self.dtype)
        diag = np.arange(H)
        J[..., diag, diag] = f  # ∂c_t/∂c_{t-1} = diag f_t
        J[..., :H, H:] = Bt
        J[..., H + diag, diag] = d * f  # ∂h_t/∂c_{t-1}
        J[..., H:, H:] = a[..., 3, :, None] * U[3] + d[..., :, None] * Bt  # ∂h_t/∂h_{t-1}
        return J

    # ------------------------------------------------- the cell-to-cell Jacobian

    def dcdc_jvp(self, t: Steps, u: np.ndarray) -> np.ndarray:
        """M_t u with M_t = dc_t/dc_{t-1} = diag(f_t) + B_t diag(d_{t-1}) (docs/theory.md §4.2).

        The path through h_{t-1} = o_{t-1} ⊙ tanh c_{t-1} with o_{t-1} held fixed;
        at t = 0, h_0 is given and M_0 = diag(f_1). u (B, p, H).
        """
        H = self.f.shape[-1]
        z = _rows_matmul(self._d_prev[t] * u, self.W_hh_T[:, : 3 * H])  # (..., p, 3H) of dh_{t-1}
        z *= self._a[t][..., : 3 * H]
        out = self._f[t] * u
        out += z[..., :H]
        out += z[..., H : 2 * H]
        out += z[..., 2 * H :]
        return out

    def dcdc_vjp(self, t: Steps, v: np.ndarray) -> np.ndarray:
        """M_t^T v, v (B, p, H)."""
        H = self.f.shape[-1]
        dz = np.empty(v.shape[:-1] + (3 * H,), self.dtype)  # (..., p, 3H)
        for gate in range(3):
            dz[..., gate * H : (gate + 1) * H] = v
        dz *= self._a[t][..., : 3 * H]
        out = _rows_matmul(dz, self.W_hh[: 3 * H])  # (..., p, H)
        out *= self._d_prev[t]
        out += self._f[t] * v
        return out

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
    q: np.ndarray,
    steps: int,
) -> np.ndarray:
    """Largest singular value of many small operators A at once, by Lanczos on A^T A.

    mv(u) = A u and rmv(v) = A^T v act on stacks of row vectors (..., 1, n); q
    (..., 1, n) holds the starting vectors (any nonzero ones); returns (..., 1).
    Each of the `steps` Lanczos steps costs one A and one A^T product (three-term
    recurrence, no re-orthogonalization). The largest Ritz value is a lower bound
    that converges from below; exact in exact arithmetic once steps >= n. NaN for an
    operator whose A^T A products overflow (LAPACK cannot diagonalise inf or NaN).
    """
    lead = q.shape[:-1]
    alpha = np.empty(lead + (steps,), q.dtype)
    beta = np.empty(lead + (steps,), q.dtype)
    q = q / np.sqrt(np.square(q).sum(axis=-1, keepdims=True))
    q_prev = None
    for j in range(steps):
        w = rmv(mv(q))  # A^T A q_j
        alpha[..., j] = a = (w * q).sum(axis=-1)
        w -= a[..., None] * q
        if q_prev is not None:
            w -= beta[..., j - 1, None] * q_prev
        beta[..., j] = b = np.sqrt(np.square(w).sum(axis=-1))
        q_prev = q
        with np.errstate(divide="ignore", invalid="ignore"):
            q = w / b[..., None]
        q[b <= 1e-300] = 0.0  # the Krylov space is invariant: nothing more to add
    m = np.arange(steps)
    Tm = np.zeros(lead + (steps, steps), q.dtype)  # (..., m, m) the tridiagonal projection of A^T A
    Tm[..., m, m] = alpha
    Tm[..., m[1:], m[:-1]] = Tm[..., m[:-1], m[1:]] = beta[..., :-1]
    top = np.full(lead, np.nan, q.dtype)  # (..., 1) NaN where A^T A overflowed (inf or NaN in Tm)
    finite = np.isfinite(Tm).all(axis=(-2, -1))  # (..., 1)
    top[finite] = np.linalg.eigvalsh(Tm[finite])[..., -1]
    return np.sqrt(np.maximum(top, 0.0))


def spectral_norms(jac: StateJacobians, steps: int | None = 12, seed: int = 0) -> np.ndarray:
    """||J_t||_2 per step and sample, (T, B).

    steps=None: exact, by the SVD of every dense J_t (costly: T·B SVDs of 2H x 2H);
    otherwise `steps` Lanczos steps (see `top_singular_value`).
    """
    T, B, H = jac.shape
    if steps is None:
        return np.linalg.svd(jac.dense(slice(None)), compute_uv=False)[..., 0]
    q = np.random.default_rng(seed).standard_normal((T, B, 1, 2 * H)).astype(jac.dtype)
    return top_singular_value(lambda u: jac.jvp(EVERY, u), lambda v: jac.vjp(EVERY, v), q, steps)[..., 0]


def dcdc_norms(jac: StateJacobians, steps: int | None = 12, seed: int = 0) -> np.ndarray:
    """||dc_t/dc_{t-1}||_2 per step and sample, (T, B); steps as in `spectral_norms`."""
    T, B, H = jac.shape
    if steps is None:
        return np.linalg.svd(jac.dcdc_dense(slice(None)), compute_uv=False)[..., 0]
    q = np.random.default_rng(seed).standard_normal((T, B, 1, H)).astype(jac.dtype)
    mv, rmv = (lambda u: jac.dcdc_jvp(EVERY, u)), (lambda v: jac.dcdc_vjp(EVERY, v))
    return top_singular_value(mv, rmv, q, steps)[..., 0]


EVERY = slice(None)  # all steps at once


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
    whole_space: bool | None = None,
) -> np.ndarray:
    """Top-k singular values of P = J_{stop-1} ... J_{stop-window} per sample, (B, k).

    Block Krylov iteration on P^T P with blocks of p = k + oversample vectors (oversample
    defaults to k), each product taken as `window` JVPs and `window` VJPs, never as a dense
    matrix. Every iteration adds the block P^T P Q_m, orthogonalised against all earlier
    blocks, and the Ritz values are the singular values of P on the span of all blocks so
    far (Rayleigh-Ritz: lower bounds that converge from below, much faster than those of
    the last block alone, i.e. of subspace iteration, when the top values are clustered).
    Stops when each of the top k changed by less than rtol (relative) in the last
    iteration, or when the blocks span the whole space (then the values are exact); the
    error is then typically far below rtol. A few iterations of p vectors cost about as
    much as one pass of 2H vectors: when 2H <= WHOLE_SPACE * p (or whole_space is True)
    the block is the whole space (Q = I, p = 2H) and a single pass of JVPs gives P's
    singular values exactly, with no iteration. stop defaults to T: the window ending at
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
    whole = n <= WHOLE_SPACE * p if whole_space is None else whole_space  # one exact pass
    if whole:
        Q = np.broadcast_to(np.eye(n, dtype=jac.dtype), (B, n, n)).copy()  # (B, 2H, 2H): P Q^T = P
        Y, log_scale = _scaled_sweep(jac.jvp, range(start, stop), Q)  # P = e^log_scale Y^T
        return _ritz_values([Y], [log_scale])[:, :k]
    Q = np.random.default_rng(seed).standard_normal((B, p, n)).astype(jac.dtype)
    Q = _orthonormal_rows(Q)  # (B, p, 2H)
    blocks, images, scales = [], [], []  # Q_m (B, p, 2H) orthonormal together; P Q_m^T = e^scale Y^T
    s_old = np.full((B, k), np.inf)
    for _ in range(max_iter):
        Y, log_scale = _scaled_sweep(jac.jvp, range(start, stop), Q)
        blocks.append(Q)
        images.append(Y)
        scales.append(log_scale)
        s = _ritz_values(images, scales)  # (B, m p)
        if np.all(np.abs(s[:, :k] - s_old) <= rtol * s[:, :k]) or sum(V.shape[1] for V in blocks) >= n:
            break
        s_old = s[:, :k]
        spanned = sum(V.shape[1] for V in blocks)
        if spanned + p >= n:  # the rest of the space: its orthonormal complement, exactly
            basis = np.concatenate(blocks, axis=1)  # (B, spanned, 2H)
            Q = np.swapaxes(np.linalg.qr(np.swapaxes(basis, -1, -2), mode="complete")[0], -1, -2)[:, spanned:]
            continue
        Z, _ = _scaled_sweep(jac.vjp, range(stop - 1, start - 1, -1), Y)  # ∝ P^T P Q^T
        for _ in range(2):  # block Gram-Schmidt against every earlier block, twice
            for V in blocks:
                Z = Z - np.einsum("bpq,bqn->bpn", np.einsum("bpn,bqn->bpq", Z, V), V)
            Z = _orthonormal_rows(Z)
        Q = Z
    return s[:, :k]


def _ritz_values(images: list[np.ndarray], scales: list[np.ndarray]) -> np.ndarray:
    """Singular values (B, m p), largest first, of P on the span of orthonormal blocks whose
    images are P Q_j^T = e^{scales[j]} images[j]^T (images[j] (B, p, n), scales[j] (B,))."""
    ref = np.max(scales, axis=0)  # (B,) the largest scale; the other blocks relative to it
    rows = np.concatenate(
        [Y * np.exp(ls - ref).astype(Y.dtype)[:, None, None] for Y, ls in zip(images, scales, strict=True)],
        axis=1,
    )  # (B, m p, n): the rows (P w)^T of an orthonormal basis w, over e^ref
    with np.errstate(over="ignore", under="ignore"):
        return np.linalg.svd(rows, compute_uv=False) * np.exp(ref)[:, None]


WHOLE_SPACE = 16  # window_singular_values: the whole space (p = 2H) when 2H <= 16p


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
    step: Callable[[int, Frame], Frame],
    Q: np.ndarray,
    T: int,
    warmup: int = 0,
    qr_every: int | None = None,
    split: Callable[[np.ndarray], Frame] | None = None,
    join: Callable[[Frame], np.ndarray] | None = None,
) -> Lyapunov:
    """Lyapunov exponents by QR re-orthonormalization (docs/theory.md §4.4).

    step(t, U) returns J_t U for U (B, k, n) (rows); Q (B, k, n) has orthonormal rows.
    Steps 0..warmup-1 only align Q (their growth is discarded); steps warmup..T-1 add
    log|diag R| of the QR factorizations, which are also taken at the end of the
    warm-up and of the run. Returns S / (T - warmup), per sample.

    qr_every: steps between QR factorizations. None chooses it as it goes: after each
    QR the spread of log|diag R| per step, max over samples of (λ_1 - λ_k)·steps, sets
    the next interval so that the frame's condition number stays below e^LOG_COND
    and its vectors neither grow nor shrink by more than e^LOG_COND (float32's range
    is e^±87), at most MAX_QR_EVERY steps. Between factorizations the rows of Q stop
    being orthonormal, but the product of the R factors, hence S, is the same.

    split, join: when given, `step` works on split(U) instead of U (any form that
    is cheaper to step, such as the c and h halves of the state) and join turns it
    back into rows for the QR factorization.
    """
    split = split or (lambda U: U)
    join = join or (lambda U: U)
    B, k, _ = Q.shape
    S = np.zeros((B, k))
    tiny = np.finfo(np.float64).tiny
    every = 1 if qr_every is None else qr_every
    since = 0
    frame = split(Q)
    for t in range(T):
        frame = step(t, frame)
        since += 1
        if since == every or t == warmup - 1 or t == T - 1:
            Qt, R = np.linalg.qr(np.swapaxes(join(frame), -1, -2))  # (B, n, k), (B, k, k)
            frame = split(np.swapaxes(Qt, -1, -2))
            r = np.abs(np.diagonal(R, axis1=-2, axis2=-1)).astype(np.float64)  # (B, k)
            log_r = np.log(np.maximum(r, tiny))
            if t >= warmup:
                S += log_r
            if qr_every is None:
                spread = float(np.max(log_r.max(axis=-1) - log_r.min(axis=-1))) / since
                size = float(np.max(np.abs(log_r))) / since
                bound = max(spread, size, 1e-12)  # inf or NaN once the frame has overflowed
                every = int(np.clip(LOG_COND / bound, 1, MAX_QR_EVERY)) if np.isfinite(bound) else 1
            since = 0
    return Lyapunov(per_sample=S / (T - warmup), steps=T - warmup)


LOG_COND = 16.0  # adaptive QR: keep cond(Q) below e^16 ≈ 9e6 between factorizations
MAX_QR_EVERY = 16


class _FrameSweep:
    """The Lyapunov sweep's frame as its c and h halves (B, k, H) in two fixed buffers, stepped
    in place: `jvp_parts`, the same operations in the same order (bitwise equal), with every
    buffer and per-step view made once, so that a step is 8 ufunc calls and one GEMM."""

    def __init__(self, jac: StateJacobians, k: int):
        T, B, H = jac.shape
        self.H = H
        self.u_c = np.empty((B, k, H), jac.dtype)  # the c half of the frame's rows
        self.u_h = np.empty((B, k, H), jac.dtype)
        self.z = np.empty((B * k, 4 * H), jac.dtype)  # W_hh u_h, then its gate parts
        self.z3 = self.z.reshape(B, k, 4 * H)
        self.parts = [self.z3[..., g * H : (g + 1) * H] for g in range(4)]  # i, f, g, o blocks
        self.a, self.f, self.d = list(jac._a), list(jac._f), list(jac._d)  # per-step views
        self.W_hh_T = jac.W_hh_T

    def split(self, U: np.ndarray) -> _FrameSweep:
        np.copyto(self.u_c, U[..., : self.H])
        np.copyto(self.u_h, U[..., self.H :])
        return self

    def join(self, _frame) -> np.ndarray:
        return np.concatenate((self.u_c, self.u_h), axis=-1)

    def step(self, t: int, frame: _FrameSweep) -> _FrameSweep:
        u_c, u_h, z3 = self.u_c, self.u_h, self.z3
        zi, zf, zg, zo = self.parts
        np.matmul(u_h.reshape(self.z.shape[0], self.H), self.W_hh_T, out=self.z)  # W_hh u_h, eq. (1)
        np.multiply(z3, self.a[t], out=z3)  # gate parts, eqs. (10)-(13)
        np.multiply(u_c, self.f[t], out=u_c)  # diag(f_t) u_c, eq. (6)
        np.add(u_c, zi, out=u_c)
        np.add(u_c, zf, out=u_c)
        np.add(u_c, zg, out=u_c)  # + B_t u_h: dc
        np.multiply(self.d[t], u_c, out=u_h)  # ∂h_t/∂c_t dc_t, eq. (7)
        np.add(u_h, zo, out=u_h)  # + diag(a^o) U_o u_h: dh
        return self


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
    Q = _orthonormal_rows(rng.standard_normal((B, k, n)).astype(jac.dtype))  # (B, k, 2H)
    sweep = _FrameSweep(jac, k)
    res = benettin(sweep.step, Q, T, warmup, qr_every, split=sweep.split, join=sweep.join)
    order = np.argsort(-res.per_sample.mean(axis=0), kind="stable")  # largest first
    res.per_sample = res.per_sample[:, order]
    return res


# ------------------------------------------- gradient growth, predicted vs measured


def log_slope(y: np.ndarray) -> float:
    """Theil-Sen slope of log y against the step index (`diagnostics.theil_sen_slope`).

    Robust to a few outlying steps (a transient near the loss, a spike). Entries of y
    that are not finite, or below the smallest normal float64 (zero after underflow,
    or subnormal and imprecise), are left out; NaN if fewer than two remain.
    """
    y = np.asarray(y, np.float64)
    keep = np.isfinite(y) & (y >= np.finfo(np.float64).tiny)
    return theil_sen_slope(np.log(y, out=np.full(y.shape, np.nan), where=keep))


def gradient_growth_rate(grad_c_norm: np.ndarray, start: int = 0, stop: int | None = None) -> float:
    """Measured per-step growth of ||dL/dc_t|| going back in time, over steps [start, stop).

    = -(slope of log ||dL/dc_t|| against t), so that ||dL/dc_{t-k}|| ≈ e^{rate·k} ||dL/dc_t||:
    negative when the gradient vanishes toward early steps; comparable with the
    largest Lyapunov exponent λ_1. grad_c_norm (T,), index t = step t as in the engine.
    """
    y = np.asarray(grad_c_norm)[start:stop]
    return -log_slope(y)


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


def _all_nan(out: dict, k: int, n_steps: int, window_k: int, steps: int, with_gradient: bool) -> dict:
    """`out` for a forward pass with non-finite values: NaN everywhere (null in JSON)."""
    nan = float("nan")
    out.update({key: [nan] * k for key in ("lyapunov", "lyapunov_std", "lyapunov_stderr")})
    out.update({key: [nan] * n_steps for key in ("spectral_norm", "cell_path_norm", "dcdc_norm")})
    out["window_singular_values"] = [nan] * window_k
    if with_gradient:
        out["gradient"] = compare_growth(Lyapunov(np.full((1, 1), nan), steps), np.array([nan]))
    return out


def layer_dynamics(
    cache: LayerCache,
    W_hh: np.ndarray,
    k: int = 8,
    warmup: int | None = None,
    window: int = 20,
    window_k: int = 4,
    window_samples: int | None = None,
    norm_samples: int | None = 4,
    norm_points: int | None = 64,
    lanczos_steps: int | None = 12,
    qr_every: int | None = None,
    seed: int = 0,
    grad_c: np.ndarray | None = None,
    lyapunov_steps: int | None = None,
    dtype: np.dtype | type | None = None,
) -> dict:
    """Everything above for one layer, as plain JSON-able data (`layers[k].dynamics`).

    k: how many Lyapunov exponents (clipped to 2H), from every sample of the batch;
    lyapunov_steps: the Lyapunov sweep runs over the last min(T, lyapunov_steps) steps
    of the sequence (None: all T); warmup: steps of the sweep discarded before
    accumulating (default a quarter of the sweep, T // 4 when it covers all T);
    window, window_k: the product over the last `window` steps (clipped to T) and how
    many of its singular values (0: skip), median over the first window_samples
    samples (None: all);
    norm_samples: the per-step norms (spectral, cell path, dc/dc) use the first
    norm_samples samples (None: all; 0: skip) and report their median per step;
    norm_points: they are taken at every s-th step counted back from the last one,
    s = ceil(T / norm_points), so at most norm_points steps (None: every step);
    "norm_steps" lists those steps as t = 1..T;
    lanczos_steps: Lanczos steps for them (None: exact SVD); qr_every: see `benettin`.
    With grad_c (T, B, H), this layer's dL/dc_t (the engine's `LayerGrads.dc`), adds
    "gradient": the measured per-step growth of ||dL/dc_t|| per sample over the same
    steps the exponents accumulate over, against the one λ_1 predicts (`compare_growth`).
    dtype: the Jacobians' dtype (None: the cache's; float32 halves the cost of a float64
    model's dynamics, docs/dynamics.md §7); the gradient fit reads grad_c as it is.
    A forward pass with non-finite values gives NaN everywhere (null in JSON).
    Each part builds the local derivatives of only the steps and samples it uses.
    """
    T, B, H4 = cache.gates.shape
    H = H4 // 4
    k = min(k, 2 * H)
    window = min(window, T)
    window_k = min(window_k, 2 * H)
    sweep = T if lyapunov_steps is None else min(T, lyapunov_steps)
    t0 = T - sweep  # the sweep covers steps t0..T-1 (0-based)
    warmup = sweep // 4 if warmup is None else warmup
    S = B if norm_samples is None else min(norm_samples, B)
    SW = B if window_samples is None else min(window_samples, B)
    stride = 1 if norm_points is None else -(-T // norm_points)  # ceil(T / norm_points)
    steps = np.arange(T - 1, -1, -stride)[::-1] if S else np.arange(0)  # ends at the last step
    settings = {"k": k, "warmup": warmup, "steps": sweep - warmup, "samples": B, "state_size": 2 * H}
    settings.update(lyapunov_steps=lyapunov_steps, sweep=[t0 + 1, T])
    settings.update(qr_every="adaptive" if qr_every is None else qr_every, window=window, window_k=window_k)
    settings.update(window_samples=SW, norm_samples=S, norm_points=norm_points, norm_stride=stride)
    dt = _computed_in(cache, W_hh, dtype)
    settings.update(lanczos_steps=lanczos_steps, aggregate=AGGREGATE, log="natural, per step", dtype=dt.name)
    out = {key: [] for key in _KEYS}  # in this order in the JSON
    out.update(norm_steps=(steps + 1).tolist(), settings=settings)
    if not _finite_cache(cache):
        return _all_nan(out, k, steps.size, window_k, sweep - warmup, with_gradient=grad_c is not None)
    W_hh_T = np.ascontiguousarray(np.asarray(W_hh, dt).T)  # (H, 4H), shared by the parts below
    jac = StateJacobians.from_cache(cache, W_hh, slice(t0, T) if t0 else None, W_hh_T, dt)  # sweep's steps
    lyap = lyapunov_spectrum(jac, k, warmup, qr_every, seed)
    out["lyapunov"] = lyap.mean.tolist()
    out["lyapunov_std"] = lyap.std.tolist()
    out["lyapunov_stderr"] = lyap.stderr.tolist()
    if S:
        sub = StateJacobians.from_cache(_samples(cache, S), W_hh, steps, W_hh_T, dt)
        out["spectral_norm"] = np.median(spectral_norms(sub, lanczos_steps, seed), axis=1).tolist()
        out["cell_path_norm"] = np.median(cell_path_norms(sub), axis=1).tolist()
        out["dcdc_norm"] = np.median(dcdc_norms(sub, lanczos_steps, seed), axis=1).tolist()
    if window_k:
        last = StateJacobians.from_cache(_samples(cache, SW), W_hh, slice(T - window, T), W_hh_T, dt)
        sv = window_singular_values(last, window_k, window, seed=seed)  # (SW, window_k)
        out["window_singular_values"] = np.median(sv, axis=0).tolist()
    if grad_c is not None:
        out["gradient"] = compare_growth(lyap, gradient_growth_rates(grad_c, t0 + warmup, T))
    return out


_KEYS = ("lyapunov", "lyapunov_std", "lyapunov_stderr", "norm_steps", "spectral_norm", "cell_path_norm")
_KEYS += ("dcdc_norm", "window_singular_values")
AGGREGATE = "Lyapunov: mean over samples; norms and window: median over samples"


# float32 Jacobians only while one step's growth bound g keeps g^4 below float32's ~3.4e38:
# Lanczos (`top_singular_value`) applies A^T A (g^2) and squares the result for its norm (g^4).
# With 1e30, --set model.recurrent_scale=1e12 (g ~ 1e12) overflowed to inf in those norms.
F32_GROWTH = 1e9


def _computed_in(cache: LayerCache, W_hh: np.ndarray, dtype) -> np.dtype:
    """The dtype the Jacobians are computed in: `dtype` (None: the cache's), except that a float64
    cache stays float64 when float32 could overflow: one step's growth is at most
    4H max|a| max|W_hh| + max f, with |a^f| <= |c_{t-1}| / 4 the largest local derivative."""
    model = np.result_type(cache.gates.dtype, np.float32)
    dt = model if dtype is None else np.result_type(dtype, np.float32)
    if dt == np.float32 and model == np.float64:
        H4 = cache.gates.shape[-1]
        with np.errstate(over="ignore", invalid="ignore"):
            growth = H4 * np.maximum(_abs_max(cache.c), 1.0) * _abs_max(np.asarray(W_hh))
        if not growth < F32_GROWTH:  # also NaN
            return model
    return dt


def _samples(cache: LayerCache, n: int) -> LayerCache:
    """The forward cache of the first n samples (views)."""
    S = slice(0, n)
    return LayerCache(
        x=cache.x[:, S], gates=cache.gates[:, S], c=cache.c[:, S], h=cache.h[:, S], tanh_c=cache.tanh_c[:, S]
    )


def _finite_cache(cache: LayerCache) -> bool:
    """Whether every local derivative of every step can be finite: gates, c_{t-1}, tanh c_t.
    By their extremes (NaN propagates through min and max, an infinity is one): two passes
    without a full-size boolean array."""
    return all(_finite_extremes(x) for x in (cache.gates, cache.c[:-1], cache.tanh_c))


def _finite_extremes(x: np.ndarray) -> bool:
    return x.size == 0 or bool(np.isfinite(x.min()) and np.isfinite(x.max()))


def _abs_max(x: np.ndarray) -> float:
    """max |x| (NaN if x holds one) without an |x| copy; 0 for an empty x."""
    return float(np.maximum(x.max(), -x.min())) if x.size else 0.0  # np.maximum propagates NaN
